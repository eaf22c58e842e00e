"""Known weight transforms by recipe name: each is a module exposing ``TRANSFORM``.

Adding one (SmoothQuant, AWQ, VLMQ) is one module plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib

from edgecompile.errors import InputError
from edgecompile.transforms.base import WeightTransform

_MODULES: dict[str, str] = {
    "gptq": "edgecompile.transforms.gptq",
}


def transform_names() -> list[str]:
    return sorted(_MODULES)


def get_transform(name: str) -> WeightTransform:
    if name not in _MODULES:
        raise InputError(f"quantization.weight_transforms: unknown transform '{name}'; expected one of {', '.join(transform_names())}")
    return importlib.import_module(_MODULES[name]).TRANSFORM
