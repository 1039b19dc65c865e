"""Loading NeMo ASR models (`.nemo` files, names in the checkpoint folders, NeMo pretrained names) for
the streaming recognisers, with every way that can fail turned into a one-line error."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tarfile
from pathlib import Path

from asr_stream import resources
from asr_stream.errors import UserError


@contextlib.contextmanager
def quiet_nemo():
    """NeMo logs config dumps and warnings on every restore; users need none of it."""
    from nemo.utils import logging as nemo_logging

    level = nemo_logging.getEffectiveLevel()
    nemo_logging.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nemo_logging.setLevel(level)


def resolve_model_path(spec: str | None) -> str:
    """`spec` is a `.nemo` path, a name in the checkpoint folders (with or without `.nemo`; see
    `asr_stream.resources`), or a NeMo pretrained name (downloaded by NeMo into its cache). No
    spec: the one `.nemo` in the user's folders, else the bundled AN4 model."""
    if not spec:
        found = resources.checkpoints_with(".nemo") or sorted(resources.BUNDLED_MODELS.glob("*.nemo"))
        if len(found) == 1:
            return str(found[0])
        raise UserError("--asr nemo needs --model PATH.nemo (or one .nemo in the checkpoint folders); "
                        f"found {len(found)} in {', '.join(str(d) for d in resources.user_checkpoint_dirs())}")
    if Path(spec).expanduser().is_file():
        return str(Path(spec).expanduser())
    found = resources.find_checkpoint(spec, ".nemo")
    if found is not None:
        return str(found)
    if spec.endswith(".nemo") or os.sep in spec:
        raise UserError(f"NeMo model {spec} does not exist")
    return spec  # a pretrained name


def load_nemo_model(spec: str | None, device: str = "cpu"):
    """Restore a NeMo ASR model; every way this can fail is a one-line UserError."""
    path = resolve_model_path(spec)
    logging.getLogger("nv_one_logger").setLevel(logging.ERROR)  # telemetry chatter on import
    try:
        from nemo.collections.asr.models import ASRModel
    except ImportError:
        raise UserError("--asr nemo needs NeMo: pip install -c constraints.txt 'nemo_toolkit[asr]==3.0.0' "
                        "(make install does this)") from None
    with quiet_nemo():
        if Path(path).is_file():
            if not tarfile.is_tarfile(path):
                raise UserError(f"{path} is not a .nemo file (a .nemo is a tar archive)")
            with tarfile.open(path) as tar:
                if not any(Path(n).name == "model_config.yaml" for n in tar.getnames()):
                    raise UserError(f"{path} has no model_config.yaml: not a NeMo model")
            try:
                model = ASRModel.restore_from(path, map_location=device)
            except Exception as exc:  # NeMo raises anything from hydra/omegaconf/torch here
                raise UserError(f"cannot load NeMo model {path}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        else:
            try:
                model = ASRModel.from_pretrained(path, map_location=device)
            except Exception as exc:
                raise UserError(f"cannot get NeMo pretrained model '{path}' (offline? put the .nemo in "
                                f"{resources.home() / 'checkpoints'}): {type(exc).__name__}") from None
    model.eval()
    model._asr_stream_source = path
    if ctc_head(model) is None:
        raise UserError(f"{path}: {type(model).__name__} has no CTC head (use a CTC or hybrid RNNT-CTC model)")
    return model


def ctc_head(model):
    """The CTC decoder of a CTC model, or of a hybrid RNNT-CTC model; None otherwise."""
    head = getattr(model, "ctc_decoder", None)
    if head is not None:
        return head
    from nemo.collections.asr.modules import ConvASRDecoder

    return model.decoder if isinstance(getattr(model, "decoder", None), ConvASRDecoder) else None


def model_source(model) -> str:
    """Where a loaded model came from: its .nemo path, or its pretrained name."""
    return getattr(model, "_asr_stream_source", "")


def source_digest(source: str) -> str:
    """A short content hash of a .nemo file (its name for a pretrained model without a file):
    exports made from a model are keyed by it, so a retrained file never reuses a stale one."""
    digest = hashlib.sha256()
    if Path(source).is_file():
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(source.encode())
    return digest.hexdigest()[:16]
