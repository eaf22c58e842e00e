"""Map a checkpoint's ``config.model_type`` to its adapter."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from edgecompile.errors import InputError
from edgecompile.models.adapter import ModelAdapter, TilingAdapter


# One line per family: "module:AdapterClass". Importing an adapter module never needs an optional
# package, so an ImportError here is a bug and is raised as one.
_ADAPTERS: tuple[str, ...] = (
    "edgecompile.models.dual_encoder:ClipAdapter",
    "edgecompile.models.dual_encoder:SiglipAdapter",
    "edgecompile.models.siglip2:Siglip2Adapter",
    "edgecompile.models.llava:LlavaAdapter",
    "edgecompile.models.llava_next:LlavaNextAdapter",
    "edgecompile.models.llava_next:LlavaOnevisionAdapter",
    "edgecompile.models.idefics3:Idefics3Adapter",
    "edgecompile.models.paligemma:PaliGemmaAdapter",
    "edgecompile.models.qwen2_vl:Qwen2VLAdapter",
    "edgecompile.models.qwen2_vl:Qwen2_5_VLAdapter",
)


# Families known but not (yet) compiled: the refusal names the family and the nearest supported one,
# so a user knows what is missing and what they could use instead.
_NOT_YET: dict[str, tuple[str, str]] = {
    "smolvlm": ("SmolVLM2 (the smolvlm model type; its processor also needs num2words and torchvision)", "idefics3 (SmolVLM v1 checkpoints such as SmolVLM-256M are model_type idefics3)"),
    "idefics2": ("Idefics2 (perceiver resampler connector)", "idefics3"),
    "llava_next_video": ("LLaVA-NeXT-Video (video frames)", "llava_next"),
    "gemma3": ("Gemma 3 (SigLIP tower with pan-and-scan, sliding-window decoder)", "paligemma"),
}


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


def adapter_for(path: Path, options: Any = None) -> ModelAdapter:
    """The adapter for the checkpoint in ``path``, set up with a recipe's ``model_options``; a clear error for unsupported families."""
    model_type = model_type_of(path)
    for adapter in _adapters():
        if model_type in adapter.model_types:
            _apply_options(adapter, model_type, path, options)
            return adapter
    supported = ", ".join(supported_model_types())
    if model_type in _NOT_YET:
        family, nearest = _NOT_YET[model_type]
        raise InputError(f"{path / 'config.json'}: model_type: '{model_type}' ({family}) is not supported yet; the nearest supported family is {nearest}; supported: {supported}")
    raise InputError(f"{path / 'config.json'}: model_type: '{model_type}' is not supported; expected one of {supported}")


def _apply_options(adapter: ModelAdapter, model_type: str, path: Path, options: Any) -> None:
    """Hand the recipe's adapter settings (``edgecompile.config.recipe.ModelOptions``) to the adapter, or refuse them."""
    grid = getattr(options, "tile_grid", None)
    if grid is None:
        return
    if not isinstance(adapter, TilingAdapter):
        tiling = sorted(t for a in _adapters() if isinstance(a, TilingAdapter) for t in a.model_types)
        raise InputError(f"recipe: model_options.tile_grid: set to {list(grid)}, but the '{model_type}' family ({path / 'config.json'}) does not cut images into tiles; expected it unset (tiling families: {', '.join(tiling)})")
    adapter.set_tile_grid(tuple(grid), path)
