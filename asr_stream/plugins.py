"""`package.module:factory` specs, so users plug in their own stages without editing the engine."""

from __future__ import annotations

import importlib

from asr_stream.errors import UserError


def load_factory(spec: str, kind: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import {kind} module '{module_name}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UserError(f"{kind} module '{module_name}' has no '{attr}'") from None
