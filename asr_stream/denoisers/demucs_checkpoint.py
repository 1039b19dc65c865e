"""Demucs denoiser checkpoints: read them without running code from them, find them by name,
download the published ones.

A checkpoint is a pickle, and unpickling can run anything. So files are read with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers. The
reference trainer's package dict also names its model class (`denoiser.demucs.Demucs`); that
one name is mapped to `DemucsPlaceholder`, an inert class of ours, so those packages load while
every other global (os.system, getattr, ...) is refused.

Two shapes of file are understood:
- the trainer's package `{'class', 'args', 'kwargs', 'state'}` (its `best.th`), also nested under
  `'model'` (its `checkpoint.th`, where `'best_state'` then wins);
- a bare state dict (the published dns48/dns64/master64), also under `'state'`, `'best_state'`
  or `'state_dict'`. Its hyper-parameters are read off the tensor shapes where they show, and
  the rest (stride, resample, sample rate, ...) come from the defaults the caller passes.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from pathlib import Path

import torch

from asr_stream import resources
from asr_stream.denoisers.demucs import Demucs
from asr_stream.errors import UserError


PRETRAINED: dict[str, dict] = {
    "dns48": {"url": "https://dl.fbaipublicfiles.com/adiyoss/denoiser/dns48-11decc9d8e3f0998.th",
              "hparams": {"hidden": 48, "sample_rate": 16_000}},
    "dns64": {"url": "https://dl.fbaipublicfiles.com/adiyoss/denoiser/dns64-a7761ff99a7d5bb6.th",
              "hparams": {"hidden": 64, "sample_rate": 16_000}},
    "master64": {"url": "https://dl.fbaipublicfiles.com/adiyoss/denoiser/master64-8a5dfb4bb92753dd.th",
                 "hparams": {"hidden": 64, "sample_rate": 16_000}},
}

URL_ENV = "ASR_STREAM_DEMUCS_URL_{}"  # e.g. ASR_STREAM_DEMUCS_URL_DNS48 points dns48 at a mirror
DOWNLOAD_TIMEOUT_S = 30.0
_HASHED_NAME = re.compile(r"-([0-9a-f]{8,64})\.th$")

# Constructor arguments, in order (the reference class takes them in the same order, which
# matters for a package's positional 'args') with their defaults.
_SIGNATURE = inspect.signature(Demucs.__init__)
HPARAM_NAMES = tuple(p for p in _SIGNATURE.parameters if p != "self")
HPARAM_DEFAULTS = {name: _SIGNATURE.parameters[name].default for name in HPARAM_NAMES}


class DemucsPlaceholder:
    """What `denoiser.demucs.Demucs` unpickles to: a name, never called, with no behaviour,
    so a package dict can say which class it was without us importing or running it."""

    __slots__ = ()

    def __init__(self) -> None:
        raise TypeError("DemucsPlaceholder only stands for a class name")


REFERENCE_CLASS = "denoiser.demucs.Demucs"


# -- reading files ----------------------------------------------------------------------------

def _safe_load(path: Path):
    """torch.load that cannot run code; every failure becomes a one-line UserError."""
    if not path.exists():
        raise UserError(f"Demucs checkpoint {path} does not exist")
    if not path.is_file():
        raise UserError(f"Demucs checkpoint {path} is not a file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise UserError(f"cannot read Demucs checkpoint {path}: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol chatter about files we refuse anyway
            with torch.serialization.safe_globals([(DemucsPlaceholder, REFERENCE_CLASS)]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, KeyError, EOFError, OSError)
        message = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if isinstance(exc, pickle.UnpicklingError) and found:
            hint = " (a trainer checkpoint.th: use its best.th)" if found.group(1).startswith("omegaconf") else ""
            raise UserError(f"Demucs checkpoint {path} refers to {found.group(1)}: refusing to run code "
                            f"from it; only tensors and plain containers are loaded{hint}") from None
        if magic == b"PK\x03\x04":
            raise UserError(f"Demucs checkpoint {path} is a damaged or truncated PyTorch file "
                            f"({_first_line(message, exc)})") from None
        # torch's own words here ("Unsupported operand 181", "KeyError: 105") mean nothing to a user
        raise UserError(f"Demucs checkpoint {path} is not a PyTorch checkpoint file") from None


def _first_line(message: str, exc: BaseException) -> str:
    """The first sentence of torch's (often multi-paragraph) message, or the exception's name."""
    text = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    text = text.split(". ", 1)[0].rstrip(".")
    if len(text) > 120:
        text = text[:117] + "..."
    return text or type(exc).__name__


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj, path: Path) -> tuple[dict | None, dict]:
    """(package kwargs or None for a bare state dict, state dict) from what torch.load gave."""
    if not isinstance(obj, dict):
        raise UserError(f"Demucs checkpoint {path} holds a {type(obj).__name__}, not a state dict or model package")
    if "state" in obj and ("kwargs" in obj or "class" in obj):
        cls = obj.get("class", DemucsPlaceholder)
        if cls is not DemucsPlaceholder:
            raise UserError(f"Demucs checkpoint {path} is a package for {repr(cls).splitlines()[0][:80]}, not {REFERENCE_CLASS}")
        kwargs, args = obj.get("kwargs") or {}, obj.get("args") or ()
        if not isinstance(kwargs, dict) or not isinstance(args, (tuple, list)):
            raise UserError(f"Demucs checkpoint {path} has malformed 'args'/'kwargs' in its package")
        if len(args) > len(HPARAM_NAMES):
            raise UserError(f"Demucs checkpoint {path} passes {len(args)} positional arguments to the model")
        hparams = dict(zip(HPARAM_NAMES, args))
        hparams.update(kwargs)
        return hparams, _state_of(obj["state"], path)
    if isinstance(obj.get("model"), dict):
        inner = dict(obj["model"])
        if _is_state_dict(obj.get("best_state")):
            inner["state"] = obj["best_state"]  # the trainer's best weights, as its best.th holds
        return _unwrap(inner, path)
    for key in ("best_state", "state", "state_dict"):
        if _is_state_dict(obj.get(key)):
            return None, _state_of(obj[key], path)
    return None, _state_of(obj, path)


def _state_of(state, path: Path) -> dict:
    if not _is_state_dict(state) or not any(k.endswith("encoder.0.0.weight") for k in state):
        keys = list(state)[:5] if isinstance(state, dict) else []
        shown = f" (keys: {', '.join(map(str, keys))}{', ...' if len(state) > 5 else ''})" if keys else ""
        raise UserError(f"Demucs checkpoint {path} holds no Demucs weights we recognise{shown}")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def infer_hparams(state: dict) -> dict:
    """The hyper-parameters a bare state dict's shapes show: chin, chout, hidden, depth,
    kernel_size, glu, causal, growth (and max_hidden when the widths stop growing). Stride,
    resample, normalisation and sample rate leave no trace in the weights."""
    depth = 0
    while f"encoder.{depth}.0.weight" in state:
        depth += 1
    first = state["encoder.0.0.weight"]
    if first.dim() != 3 or depth == 0:
        raise ValueError(f"encoder.0.0.weight has shape {tuple(first.shape)}, not (out, in, kernel)")
    widths = [int(state[f"encoder.{i}.0.weight"].shape[0]) for i in range(depth)]
    hidden = widths[0]
    pointwise = state.get("encoder.0.2.weight")
    last = state.get(f"decoder.{depth - 1}.2.weight")
    found = dict(chin=int(first.shape[1]), hidden=hidden, depth=depth, kernel_size=int(first.shape[2]),
                 glu=pointwise is None or int(pointwise.shape[0]) == 2 * hidden,
                 causal="lstm.lstm.weight_ih_l0_reverse" not in state)
    if last is not None and last.dim() == 3:
        found["chout"] = int(last.shape[1])
    if depth > 1:
        found.update(_growth(widths))
    return found


def _growth(widths: list[int]) -> dict:
    """growth (and max_hidden if needed) reproducing the encoder widths, as the constructor
    computes them: width = min(int(growth * width), max_hidden)."""
    def widths_for(growth: float, cap: int) -> list[int]:
        out = [widths[0]]
        for _ in widths[1:]:
            out.append(min(int(growth * out[-1]), cap))
        return out

    ratio = widths[1] / widths[0]
    candidates = [round(ratio, 1), round(ratio, 2), round(ratio, 3), ratio, (widths[1] + 0.5) / widths[0]]
    for growth in candidates:
        for cap in (HPARAM_DEFAULTS["max_hidden"], max(widths)):
            if widths_for(growth, cap) == widths:
                return {"growth": growth} if cap == HPARAM_DEFAULTS["max_hidden"] else {"growth": growth, "max_hidden": cap}
    return {"growth": ratio}  # no exact fit: the strict load will say which shapes differ


def read_checkpoint(path, *, defaults: dict | None = None, overrides: dict | None = None) -> tuple[dict, dict]:
    """(hyper-parameters, state dict) of a Demucs checkpoint, without running code from it.

    The hyper-parameters are complete (every constructor argument). Precedence, low to high:
    the constructor's defaults, `defaults` (what the caller knows of a bare state dict, e.g. a
    pretrained model's settings), what the file says (package kwargs, or the tensor shapes of
    a bare state dict), `overrides`."""
    path = Path(path)
    hparams, state = _unwrap(_safe_load(path), path)
    if hparams is None:
        try:
            hparams = infer_hparams(state)
        except (KeyError, ValueError, IndexError) as exc:
            raise UserError(f"Demucs checkpoint {path}: its tensors do not look like Demucs ({exc})") from None
    merged = {**HPARAM_DEFAULTS, **(defaults or {}), **hparams, **(overrides or {})}
    unknown = sorted(map(str, set(merged) - set(HPARAM_NAMES)))
    if unknown:
        raise UserError(f"Demucs checkpoint {path}: unknown hyper-parameter(s) {', '.join(map(str, unknown))}")
    return merged, state


def _check_state(model: Demucs, state: dict, path: Path) -> None:
    """Compare the file's tensors with the model's, naming what differs (load_state_dict's
    own message is many lines)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        shown = ", ".join(f"{k}={model.hparams[k]}" for k in ("hidden", "depth", "causal", "glu", "growth"))
        raise UserError(f"Demucs checkpoint {path} does not match its hyper-parameters ({shown}): "
                        + "; ".join(problems))


def build_demucs(hparams: dict, state: dict, path) -> Demucs:
    """A Demucs in eval mode holding `state`; UserError naming `path` when they disagree."""
    try:
        model = Demucs(**hparams)
    except (TypeError, ValueError) as exc:
        raise UserError(f"Demucs checkpoint {path}: bad hyper-parameters ({exc})") from None
    _check_state(model, state, Path(path))
    model.load_state_dict(state, strict=True)
    return model.eval()


# -- finding and fetching ---------------------------------------------------------------------

def pretrained_url(name: str) -> str:
    """The URL for a pretrained name; ASR_STREAM_DEMUCS_URL_<NAME> replaces it (a mirror)."""
    return os.environ.get(URL_ENV.format(name.upper())) or PRETRAINED[name]["url"]


def fetch_pretrained(name: str) -> Path:
    """Path of pretrained `name` in torch.hub's cache (TORCH_HOME moves it), downloaded and
    SHA-256-checked first if it is not there. The expected hash prefix is the hex part of
    the URL's file name (`name-<hex>.th`, torch.hub's convention)."""
    if name not in PRETRAINED:
        raise UserError(f"unknown pretrained Demucs '{name}' (choose from {', '.join(PRETRAINED)})")
    url = pretrained_url(name)
    filename = Path(urllib.parse.urlparse(url).path).name
    match = _HASHED_NAME.search(filename)
    if not match:
        raise UserError(f"cannot verify {url}: its file name has no SHA-256 prefix (NAME-<hex>.th); "
                        f"place the file in {resources.home() / 'checkpoints'}/{name}.th instead")
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    dst = cache / filename
    if dst.is_file():
        return dst
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the download cache {cache}: {exc.strerror or exc}") from None
    print(f"asr-stream: downloading Demucs '{name}' from {url} to {dst}", file=sys.stderr)
    _download(url, dst, match.group(1), name)
    return dst


def _download(url: str, dst: Path, hash_prefix: str, name: str) -> None:
    """Stream `url` into a temporary file next to `dst`, check its SHA-256 prefix, then move
    it into place: an interrupted or wrong download never leaves a file behind."""
    tmp = dst.with_name(f"{dst.name}.{uuid.uuid4().hex}.partial")
    sha = hashlib.sha256()
    instead = f"place the file in {resources.home() / 'checkpoints'}/{name}.th instead"
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "asr-stream"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                sha.update(chunk)
                out.write(chunk)
        digest = sha.hexdigest()
        if not digest.startswith(hash_prefix):
            raise UserError(f"download of {url} is corrupt: SHA-256 {digest[:len(hash_prefix)]}... does not "
                            f"match the {hash_prefix} its file name promises; nothing was kept")
        os.replace(tmp, dst)
    except urllib.error.HTTPError as exc:
        raise UserError(f"could not download {url} (HTTP {exc.code} {exc.reason}); {instead}") from None
    except urllib.error.URLError as exc:
        raise UserError(f"could not download {url} ({exc.reason}); offline? {instead}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs, a full disk
        raise UserError(f"could not download {url} ({exc}); {instead}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _resolve(spec: str, folders: list[Path]) -> tuple[Path, dict]:
    """The file `spec` names (first match over `folders`) and the hyper-parameter defaults that go with it."""
    where = ", ".join(str(f) for f in folders)
    if spec == "demucs":
        found = [p for f in folders if f.is_dir() for p in sorted(f.glob("*.th"))]
        if len(found) == 1:
            return found[0], {}
        if not found:
            raise UserError(f"no Demucs checkpoint (*.th) in {where}: put one there, give a path, "
                            f"or name a pretrained model ({', '.join(PRETRAINED)})")
        raise UserError(f"several Demucs checkpoints in {where} "
                        f"({', '.join(p.stem for p in found)}): name the one to use")
    if "/" in spec or os.sep in spec or spec.endswith(".th"):
        return Path(spec).expanduser(), {}
    defaults = dict(PRETRAINED[spec]["hparams"]) if spec in PRETRAINED else {}
    names = [f"{spec}.th"]
    if spec in PRETRAINED:  # the published file, dropped in under its own name
        names.append(Path(urllib.parse.urlparse(PRETRAINED[spec]["url"]).path).name)
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name, defaults
    if spec in PRETRAINED:
        return fetch_pretrained(spec), defaults
    if Path(spec).is_file():
        return Path(spec), {}
    raise UserError(f"no Demucs checkpoint '{spec}': not a file, no {spec}.th in {where}, "
                    f"and not a pretrained name ({', '.join(PRETRAINED)})")


def load_demucs(spec: str, *, checkpoints_dir: Path | list[Path] | None = None,
                overrides: dict | None = None) -> Demucs:
    """A Demucs (eval mode) from `spec`: a .th path; NAME for NAME.th in the checkpoint folders
    (`checkpoints_dir`, default the user's: see `asr_stream.resources`); `demucs` for the one .th
    there; or dns48/dns64/master64 (those folders first, else downloaded once into torch.hub's
    cache). `overrides` replace hyper-parameters the file states or implies (a bare state dict
    does not record stride or resample)."""
    if checkpoints_dir is None:
        folders = resources.user_checkpoint_dirs()
    else:
        folders = [Path(checkpoints_dir)] if isinstance(checkpoints_dir, (str, Path)) else list(checkpoints_dir)
    path, defaults = _resolve(spec, folders)
    if overrides:
        unknown = sorted(set(overrides) - set(HPARAM_NAMES))
        if unknown:
            raise UserError(f"unknown Demucs hyper-parameter(s): {', '.join(unknown)} "
                            f"(known: {', '.join(HPARAM_NAMES)})")
    hparams, state = read_checkpoint(path, defaults=defaults, overrides=overrides)
    return build_demucs(hparams, state, path)
