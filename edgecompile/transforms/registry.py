"""Known weight transforms by recipe name: each is a module attribute (``TRANSFORM`` by default).

Adding one (VLMQ) is one module plus one line in ``_MODULES``. A module may expose a second setting
under another name (``smoothquant-fixed`` and ``awq-fixed``: the seed's fixed α = 0.5).
"""

from __future__ import annotations

import importlib

from edgecompile.errors import InputError
from edgecompile.transforms.base import WeightTransform

_MODULES: dict[str, str] = {
    "gptq": "edgecompile.transforms.gptq",
    "vlmq": "edgecompile.transforms.vlmq",
    "smoothquant": "edgecompile.transforms.smoothquant",
    "smoothquant-fixed": "edgecompile.transforms.smoothquant:FIXED",
    "awq": "edgecompile.transforms.awq",
    "awq-fixed": "edgecompile.transforms.awq:FIXED",
    "int3-probe": "edgecompile.transforms.lowbit_probe:INT3",
    "int2-probe": "edgecompile.transforms.lowbit_probe:INT2",
}


def transform_names() -> list[str]:
    return sorted(_MODULES)


def get_transform(name: str) -> WeightTransform:
    if name not in _MODULES:
        raise InputError(f"quantization.weight_transforms: unknown transform '{name}'; expected one of {', '.join(transform_names())}")
    module, _, attr = _MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attr or "TRANSFORM")
