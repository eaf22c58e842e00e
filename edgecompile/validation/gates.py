"""Gates: thresholds on metrics. A gate whose metric is missing or not finite fails."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class GateResult:
    name: str
    metric: str
    value: float | None
    threshold: float
    op: str  # "<=" or ">="
    passed: bool
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_gate(name: str, metric: str, metrics: dict[str, Any], minimum: float | None, maximum: float | None) -> GateResult:
    value = metrics.get(metric)
    op, threshold = (">=", minimum) if minimum is not None else ("<=", maximum)
    assert threshold is not None  # guaranteed by the recipe schema (exactly one bound)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return GateResult(name, metric, None, threshold, op, False, "metric could not be computed; a gate never passes without its number")
    passed = value >= threshold if op == ">=" else value <= threshold
    return GateResult(name, metric, float(value), threshold, op, passed)
