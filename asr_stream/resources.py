"""Where files come from: the product's own (presets, its AN4 model, the demo sample) ship inside
the package, so an installed wheel works from any folder; the user's models live in folders they
choose, found in a fixed, documented order.

User folders, searched in this order for a checkpoint NAME (`NAME.nemo`, `NAME.th`):
1. `$ASR_STREAM_HOME/checkpoints` (default `ASR_STREAM_HOME`: the user data folder,
   `~/.local/share/asr-stream` on Linux);
2. `./checkpoints` in the working directory (the checkout's own folder when run from it);
3. the models bundled with the package (read-only).
Presets (`--config NAME`) are looked up the same way in `$ASR_STREAM_HOME/configs`, then bundled.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import platformdirs

HOME_ENV = "ASR_STREAM_HOME"


def _package_dir(name: str) -> Path:
    """A folder of package data. The package is installed as plain files (never zipped), so its
    resources are real paths that torch, NeMo and soundfile can open."""
    return Path(str(resources.files("asr_stream").joinpath("data", name)))


PRESETS = _package_dir("presets")
BUNDLED_MODELS = _package_dir("models")
SAMPLES = _package_dir("samples")


def home() -> Path:
    """The user's asr-stream folder: `$ASR_STREAM_HOME`, else the platform's user data folder."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser() if configured else Path(platformdirs.user_data_dir("asr-stream"))


def user_checkpoint_dirs() -> list[Path]:
    """Folders the user drops models into, first match wins; no bundled folder."""
    dirs = [home() / "checkpoints", Path.cwd() / "checkpoints"]
    return list(dict.fromkeys(d.resolve() if d.exists() else d for d in dirs))


def checkpoint_dirs() -> list[Path]:
    """Every folder a checkpoint name is looked up in, in order."""
    return [*user_checkpoint_dirs(), BUNDLED_MODELS]


def find_checkpoint(name: str, suffix: str) -> Path | None:
    """`name` (with or without `suffix`) in the checkpoint folders, first match; None if absent."""
    filename = name if name.endswith(suffix) else f"{name}{suffix}"
    for folder in checkpoint_dirs():
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def checkpoints_with(suffix: str) -> list[Path]:
    """Every `*suffix` file in the user's checkpoint folders (not the bundled ones)."""
    return [p for d in user_checkpoint_dirs() if d.is_dir() for p in sorted(d.glob(f"*{suffix}"))]


def is_bundled(path: str | Path) -> bool:
    """Whether `path` is one of the package's own files (never written beside)."""
    try:
        Path(path).resolve().relative_to(_package_dir("").resolve())
        return True
    except ValueError:
        return False


def preset_dirs() -> list[Path]:
    return [home() / "configs", PRESETS]


def find_preset(name: str) -> Path | None:
    for folder in preset_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def preset_names() -> list[str]:
    return sorted({p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def sample_wav() -> Path:
    """The bundled demo clip (public-domain LJSpeech, 22.05 kHz); its transcript is beside it."""
    return SAMPLES / "LJ001-0001.wav"
