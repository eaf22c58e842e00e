"""Pareto frontier over (accuracy up, latency down, memory down), after filtering by a tier's budget."""

from __future__ import annotations

from dataclasses import dataclass

from edgecompile.config.target import TIER_BUDGETS


@dataclass(frozen=True)
class Point:
    """One configuration: its name and the three objectives (None when not measured)."""

    name: str
    accuracy: float | None
    latency_ms: float | None
    memory_mb: float | None


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` everywhere and strictly better somewhere."""
    assert None not in (a.accuracy, a.latency_ms, a.memory_mb, b.accuracy, b.latency_ms, b.memory_mb)
    ge = a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms and a.memory_mb <= b.memory_mb  # type: ignore[operator]
    gt = a.accuracy > b.accuracy or a.latency_ms < b.latency_ms or a.memory_mb < b.memory_mb  # type: ignore[operator]
    return ge and gt


def feasible(points: list[Point], memory_budget_mb: float, latency_budget_ms: float) -> list[Point]:
    """Points with every objective measured and within the budget (unmeasured points are never feasible)."""
    return [p for p in points if None not in (p.accuracy, p.latency_ms, p.memory_mb) and p.memory_mb <= memory_budget_mb and p.latency_ms <= latency_budget_ms]  # type: ignore[operator]


def frontier(points: list[Point]) -> list[Point]:
    """The non-dominated points, sorted by latency."""
    complete = [p for p in points if None not in (p.accuracy, p.latency_ms, p.memory_mb)]
    return sorted((p for p in complete if not any(dominates(q, p) for q in complete if q is not p)), key=lambda p: (p.latency_ms, -p.accuracy))  # type: ignore[operator]


def tier_frontiers(points: list[Point], tiers: dict[str, tuple[int, float]] | None = None) -> dict[str, dict[str, list[Point]]]:
    """Per tier: the feasible points and their frontier."""
    out: dict[str, dict[str, list[Point]]] = {}
    for tier, (memory, latency) in (tiers or TIER_BUDGETS).items():
        ok = feasible(points, memory, latency)
        out[tier] = {"feasible": ok, "frontier": frontier(ok)}
    return out
