"""Which layers (or blocks) to raise next: the per-layer attribution ranked against what raising costs.

The attribution (validation/layer_attribution.py, ``validate/layers.json``) gives, per planned
node, ``added``: the relative error the node adds when fed the reference inputs. Raising the node
one precision step removes (most of) that error and costs bytes (and, usually, time). A candidate's
score is its attributed error per unit of cost, in the spirit of ModelOpt's AutoQuantize and
Olive's SelectiveMixedPrecision; the cost is exact for bytes (weight element count x bits) and a
first-order estimate for milliseconds (relative time per multiply-accumulate of each precision on
CPU kernels). The steps table records the measured size and latency of every step, so the estimate
is only used to rank, never reported as a measurement.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

LADDER = ("int4", "int8", "fp16", "fp32")
BITS = {"int4": 4, "int8": 8, "fp16": 16, "fp32": 32, "float": 32}
# Relative time per multiply-accumulate (fp32 = 1): int8 kernels (VNNI/dot-product) are the fastest,
# MatMulNBits dequantizes blocks on the fly, fp16 weights on a CPU without fp16 arithmetic are cast.
TIME_PER_MAC = {"int4": 0.8, "int8": 0.5, "fp16": 1.1, "fp32": 1.0, "float": 1.0}
_BLOCK = re.compile(r"^(.*?\.(?:layers|layer|h|blocks|block|resblocks)\.\d+)(?:\.|$)")


def next_precision(current: str) -> str | None:
    """One step up the ladder (int4 -> int8 -> fp16 -> fp32); None when nothing is left to raise."""
    if current not in LADDER or current == LADDER[-1]:
        return None
    return LADDER[LADDER.index(current) + 1]


def block_of(module: str) -> str:
    """The transformer block a module path belongs to (``...layers.3``), or the path itself."""
    m = _BLOCK.match(module)
    return m.group(1) if m else module


@dataclass(frozen=True)
class Member:
    """One planned node that a candidate raises."""

    component: str
    node: str
    module: str  # the torch module path (the rule's match); the node name when the exporter recorded none
    precision: str
    to: str
    numel: int
    added: float

    @property
    def delta_bytes(self) -> float:
        return self.numel * (BITS[self.to] - BITS[self.precision]) / 8

    @property
    def delta_time(self) -> float:
        return self.numel * (TIME_PER_MAC[self.to] - TIME_PER_MAC[self.precision])


@dataclass(frozen=True)
class Candidate:
    """A layer (module path) or a group (transformer block) to raise one step, with its score."""

    key: str
    members: tuple[Member, ...]
    gain: float  # attributed error removed (sum of the members' ``added``)
    cost: float  # bytes, or estimated relative time, added (floored: raising is never free)
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "gain": self.gain,
            "cost": self.cost,
            "score": self.score,
            "members": [{"component": m.component, "node": m.node, "module": m.module, "from": m.precision, "to": m.to, "added": m.added, "delta_bytes": m.delta_bytes} for m in self.members],
        }


def members(layers: Iterable[dict[str, Any]], plan_entries: Iterable[dict[str, Any]], numel: dict[tuple[str, str], int]) -> list[Member]:
    """Every attributed node that can still be raised, joined with its plan entry (module path, weight)."""
    entries = {(e["component"], e["node"]): e for e in plan_entries}
    out = []
    for row in layers:
        entry = entries.get((row["component"], row["node"]))
        added = row.get("added")
        if entry is None or added is None or not math.isfinite(added):
            continue
        to = next_precision(entry["precision"])
        if to is None:
            continue
        size = numel.get((entry["component"], entry["weight"] or ""), 0)
        out.append(Member(entry["component"], entry["node"], entry["module"] or entry["node"], entry["precision"], to, size, float(added)))
    return out


def rank(candidates_of: list[Member], *, objective: str = "accuracy_per_byte", granularity: str = "layer", min_share: float = 0.1) -> list[Candidate]:
    """Candidates, best first: attributed error per byte (or per estimated time) added.

    Only the worst offenders compete on cost: candidates whose attributed error is at least
    ``min_share`` of the largest one (a per-byte ratio alone would raise tiny harmless layers first).

    ``granularity='layer'`` makes one candidate per (component, module path); ``'group'`` one per
    transformer block, raising only the block's members at its lowest precision (one step at a time).
    """
    groups: dict[str, list[Member]] = {}
    for m in candidates_of:
        key = f"{m.component}/{m.module if granularity == 'layer' else block_of(m.module)}"
        groups.setdefault(key, []).append(m)
    ranked = []
    for key, ms in groups.items():
        if granularity == "group":
            lowest = min(LADDER.index(m.precision) for m in ms)
            ms = [m for m in ms if LADDER.index(m.precision) == lowest]
        gain = sum(m.added for m in ms)
        raw = sum(m.delta_bytes if objective == "accuracy_per_byte" else m.delta_time for m in ms)
        floor = 1.0 if objective == "accuracy_per_byte" else 1e-3 * max(1, sum(m.numel for m in ms))
        cost = max(raw, floor)
        ranked.append(Candidate(key, tuple(ms), gain, cost, gain / cost))
    top = max((c.gain for c in ranked), default=0.0)
    offenders = [c for c in ranked if c.gain >= min_share * top]
    offenders.sort(key=lambda c: (-c.score, -c.gain, c.key))
    return offenders
