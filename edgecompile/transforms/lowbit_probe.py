"""INT3 / INT2 weight probes: where does the small bundled CLIP start to lose accuracy?

Seed 002 reports a 22-point W4 drop on ViT-B/32; the bundled CLIPs lose nothing at INT4 (their
weights are near-Gaussian, without the outlier channels of a large pretrained ViT). These probes
round every INT4-planned weight to a symmetric 3- or 2-bit grid (per output channel, or per block
when the plan says per_block) in the float graph, before calibration. The INT4 build that follows
stores them exactly: its scale is half (INT3) or a quarter (INT2) of the probe's, so an INT3 level
``q`` is INT4 level ``2q`` and an INT2 level is ``4q`` (checked in tests/transforms), so the artifact computes W3A8 / W2A8
numerics on the INT4 kernels (its size is still the INT4 size: this is a measurement, not a
format). Run after ``awq`` when both are named, so AWQ's scales are searched for INT4 and then
probed at fewer bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from edgecompile.models.adapter import Feeds
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.base import TransformOutcome


def round_symmetric(w: np.ndarray, bits: int, block: int | None) -> np.ndarray:
    """Symmetric ``bits``-bit rounding of a [K, N] weight per block (``None``: per output channel).

    onnxruntime's symmetric INT4 takes the block's value of largest magnitude ``v`` (with its sign)
    and sets the scale to ``v / -8``; the probe does the same with ``v / -2^(b-1)``, so ``v`` and
    every other grid point land exactly on the INT4 grid the build then picks.
    """
    k, n = w.shape
    bs = k if block is None or k % block else block
    top = 2 ** (bits - 1)
    blocks = w.reshape(k // bs, bs, n).astype(np.float64)
    idx = np.abs(blocks).argmax(1)[:, None, :]
    signed = np.take_along_axis(blocks, idx, 1)
    scale = np.where(signed == 0, 1.0, signed / -top)
    return (np.clip(np.round(blocks / scale), -top, top - 1) * scale).reshape(k, n).astype(w.dtype)


class LowBitProbe:
    needs_activations: ClassVar[bool] = False

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.name = f"int{bits}-probe"

    def applies_to(self, entries: list[PlanEntry]) -> bool:
        return any(e.precision == "int4" for e in entries)

    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> TransformOutcome:
        inits = {i.name: i for i in model.graph.initializer}
        layers = []
        for e in entries:
            if e.precision != "int4" or e.weight not in inits or len(inits[e.weight].dims) != 2:
                continue
            w = numpy_helper.to_array(inits[e.weight])
            rounded = round_symmetric(w, self.bits, e.block_size if e.granularity == "per_block" else None)
            inits[e.weight].CopyFrom(numpy_helper.from_array(rounded, e.weight))
            change = float(np.linalg.norm(rounded - w) / max(np.linalg.norm(w), 1e-12))
            layers.append({"transform": self.name, "component": component, "node": e.node, "weight": e.weight, "bits": self.bits, "relative_change": change})
        return TransformOutcome(model, layers)


INT3 = LowBitProbe(3)
INT2 = LowBitProbe(2)
