"""Map a checkpoint's ``config.model_type`` to its adapter."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from edgecompile.errors import InputError
from edgecompile.models.adapter import ModelAdapter


# One line per family: "module:AdapterClass". Importing an adapter module never needs an optional
# package, so an ImportError here is a bug and is raised as one.
_ADAPTERS: tuple[str, ...] = (
    "edgecompile.models.dual_encoder:ClipAdapter",
    "edgecompile.models.dual_encoder:SiglipAdapter",
    "edgecompile.models.llava:LlavaAdapter",
)


def _adapters() -> list[ModelAdapter]:
    adapters = []
    for entry in _ADAPTERS:
        module, cls = entry.split(":")
        adapters.append(getattr(importlib.import_module(module), cls)())
    return adapters


def supported_model_types() -> list[str]:
    return sorted(t for a in _adapters() for t in a.model_types)


def model_type_of(path: Path) -> str:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path / 'config.json'}: cannot read the model config: {exc}") from None
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise InputError(f"{path / 'config.json'}: model_type: expected a string naming the architecture")
    return model_type


def adapter_for(path: Path) -> ModelAdapter:
    """The adapter for the checkpoint in ``path``; a clear error for unsupported families."""
    model_type = model_type_of(path)
    for adapter in _adapters():
        if model_type in adapter.model_types:
            return adapter
    raise InputError(
        f"{path / 'config.json'}: model_type: '{model_type}' is not supported; expected one of {', '.join(supported_model_types())}"
    )
