"""The contract of a weight transform, and what it hands back.

A transform reads one component's float ONNX graph, the plan's entries for it and (when it needs
activations) a fresh stream of that component's calibration feeds. It returns the transformed float
graph (the graph calibration and every backend then read), a per-layer record of what it changed,
and optionally weights it has already rounded to their low-bit grid (``Prequantized``) for backends
that can pack those codes as they are. Transforms never see the recipe or the build directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import onnx

from edgecompile.models.adapter import Feeds
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.prequantized import Prequantized


@dataclass
class TransformOutcome:
    """One transform's result on one component."""

    model: onnx.ModelProto
    layers: list[dict[str, Any]] = field(default_factory=list)  # one row per changed layer: node, weight, and the transform's own figures
    prequantized: Prequantized | None = None


class WeightTransform(Protocol):
    """A registered transform (see ``edgecompile.transforms.registry``)."""

    name: ClassVar[str]
    needs_activations: ClassVar[bool]

    def applies_to(self, entries: list[PlanEntry]) -> bool:
        """Whether this component has anything this transform changes (else it is skipped)."""

    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> TransformOutcome:
        """Transform ``model`` (a copy is fine to modify in place); ``feeds()`` gives a fresh stream."""
