"""Plan entries (ONNX node names, each carrying its torch module path) -> the torch modules to quantize.

The ONNX exporter records the module path of every node (``edgecompile.plan.roles``), with the export
wrapper's ``m.`` prefix dropped, so a plan entry's ``module`` names a submodule of the component's
torch module: ``vision_model.encoder.layers.0.mlp.fc1`` is ``m.vision_model.encoder.layers.0.mlp.fc1``
of the CLIP vision wrapper, ``model.layers.0.self_attn.q_proj`` is that path of the decoder wrapper.
This is the same mapping CoreML does (``edgecompile.backends.coreml.convert._key``), on module names
instead of MIL constant names. Entries whose module is not a Linear/Conv here are reported, never
silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgecompile.plan.plan import PlanEntry


def module_key(name: str) -> str:
    """A torch module path as the plan writes it (the export wrapper's ``m.`` prefix dropped)."""
    return name[2:] if name.startswith("m.") else name


@dataclass
class QuantTargets:
    """Which torch modules of one component get which integer precision."""

    int8: dict[str, PlanEntry] = field(default_factory=dict)  # torch module name -> entry
    int4: dict[str, PlanEntry] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # "node (module)" of integer entries with no torch module

    @property
    def any(self) -> bool:
        return bool(self.int8 or self.int4)


def quant_targets(module: Any, entries: list[PlanEntry]) -> QuantTargets:
    """Map the component's INT8/INT4 plan entries onto its Linear/Conv submodules by module path."""
    import torch

    weighted = {module_key(n): n for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))}
    out = QuantTargets()
    for entry in entries:
        if not entry.quantized:
            continue
        name = weighted.get(entry.module)
        if name is None:
            out.unmatched.append(f"{entry.node} ({entry.module or 'no module path'})")
            continue
        (out.int4 if entry.precision == "int4" else out.int8)[name] = entry
    return out
