"""YAML presets for chains (`--config NAME|PATH`): keys are Settings fields; CLI flags win."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from asr_stream.errors import UserError
from asr_stream.pipeline import Settings

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_preset(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.exists() and not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(f"config not found: {name_or_path}")
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
