"""Gates: thresholds on metrics, with three outcomes.

passed / failed, or pending: the metric cannot be measured truthfully on this machine (another
architecture, an emulator's or a stand-in's time, an artifact that cannot execute here). A gate
whose metric is missing or not finite where it should have been measured fails.
"""

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
    status: str = ""  # "passed" | "failed" | "pending"; derived from ``passed`` when not given

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "passed" if self.passed else "failed")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pending_gate(name: str, metric: str, metrics: dict[str, Any], minimum: float | None, maximum: float | None, reason: str) -> GateResult:
    """A gate this machine cannot decide; the value measured here (if any) is kept for information."""
    value = metrics.get(metric)
    op, threshold = (">=", minimum) if minimum is not None else ("<=", maximum)
    assert threshold is not None
    shown = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None
    return GateResult(name, metric, shown, threshold, op, False, reason, "pending")


def verdict(gates: list[GateResult]) -> str:
    """fail if any gate failed; pending if none failed but some wait for the device; else pass."""
    if any(g.status == "failed" for g in gates):
        return "fail"
    if any(g.status == "pending" for g in gates):
        return "pending"
    return "pass"


def evaluate_gate(name: str, metric: str, metrics: dict[str, Any], minimum: float | None, maximum: float | None) -> GateResult:
    value = metrics.get(metric)
    op, threshold = (">=", minimum) if minimum is not None else ("<=", maximum)
    assert threshold is not None  # guaranteed by the recipe schema (exactly one bound)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return GateResult(name, metric, None, threshold, op, False, "metric could not be computed; a gate never passes without its number")
    passed = value >= threshold if op == ">=" else value <= threshold
    return GateResult(name, metric, float(value), threshold, op, passed)
