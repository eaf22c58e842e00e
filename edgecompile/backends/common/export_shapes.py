"""torch.export ``dynamic_shapes`` laid out like a component's ``forward`` signature.

Shared by the backends that export from torch (CoreML, ExecuTorch): torch.export matches
``dynamic_shapes`` to the parameters, and a ``*past`` parameter takes one tuple for all the cache
tensors, so a dict keyed by the component's input names (``past_key_0``...) is refused for a
KV-cache decoder ("dynamic_shapes keys do not match the arguments").
"""

from __future__ import annotations

import inspect
from typing import Any

from edgecompile.models.adapter import ComponentSpec


def signature_shaped(spec: ComponentSpec, per_input: list[Any]) -> tuple[Any, ...]:
    """One entry per ``forward`` parameter; ``per_input`` follows ``spec.input_names``."""
    out: list[Any] = []
    i = 0
    for p in inspect.signature(spec.module.forward).parameters.values():
        if p.kind == inspect.Parameter.VAR_POSITIONAL:
            out.append(tuple(per_input[i:]))
            i = len(per_input)
        elif p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) and i < len(per_input):
            out.append(per_input[i])
            i += 1
    return tuple(out)
