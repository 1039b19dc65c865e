"""YAML presets for chains (`--config NAME|PATH`): keys are Settings fields; CLI flags win."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from asr_stream import resources
from asr_stream.errors import UserError
from asr_stream.chain.pipeline import Settings


def load_preset(name_or_path: str) -> dict:
    """A YAML file, or a preset NAME: the user's `$ASR_STREAM_HOME/configs/NAME.yaml`, else the bundled one."""
    path = Path(name_or_path)
    if not path.exists() and not path.suffix:
        path = resources.find_preset(name_or_path) or path
    if not path.is_file():
        raise UserError(f"config not found: {name_or_path} (a YAML file or one of: "
                        f"{', '.join(resources.preset_names())})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of settings")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"config {path}: unknown setting(s) {', '.join(unknown)}")
    return data
