"""PrecisionPlan: every node of every component mapped to a precision, with the rule that chose it.

The plan is a value: it is written to the build directory as JSON, read back by calibrate and
build, and printed by ``edgecompile annotate --show``. Backends may change entries they cannot
execute (say, FP16 on a CPU without FP16 arithmetic); each change is recorded with its reason.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx

from edgecompile.plan.roles import WEIGHT_OPS, RolePatterns, classify_graph
from edgecompile.plan.rules import PrecisionRule

INTEGER = {"int8", "int4"}


@dataclass(frozen=True)
class PlanEntry:
    """The decision for one node."""

    component: str
    node: str
    op_type: str
    role: str
    module: str
    weight: str | None
    precision: str  # fp32 | fp16 | int8 | int4 | float ("left in float": the graph's own dtype)
    granularity: str | None
    block_size: int | None
    symmetric: bool
    rule: str
    why: str
    changed_from: str | None = None
    # INT4 only: "dynamic" (MatMulNBits quantizes activations per block at run time, never calibrated)
    # or "static" (INT8 activation Q/DQ with calibrated ranges in front of INT4 weight DQ: seed 002's W4A8).
    activations: str | None = None

    @property
    def quantized(self) -> bool:
        return self.precision in INTEGER


@dataclass(frozen=True)
class PrecisionPlan:
    """All entries, in graph order per component."""

    entries: tuple[PlanEntry, ...]
    preset: str
    changes: tuple[str, ...] = field(default_factory=tuple)

    def for_component(self, component: str) -> list[PlanEntry]:
        return [e for e in self.entries if e.component == component]

    def nodes_at(self, component: str, precision: str) -> list[str]:
        return [e.node for e in self.entries if e.component == component and e.precision == precision]

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts of weight-carrying nodes per component and precision."""
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for e in self.entries:
            if e.weight is not None:
                out[e.component][e.precision] += 1
        return {c: dict(v) for c, v in out.items()}

    def with_change(self, component: str, node: str, precision: str, reason: str) -> PrecisionPlan:
        """Return a plan where one node's precision changed, recording why."""
        entries = tuple(
            replace(e, precision=precision, changed_from=e.precision, why=f"{reason} (was: {e.why})")
            if e.component == component and e.node == node
            else e
            for e in self.entries
        )
        return PrecisionPlan(entries, self.preset, (*self.changes, f"{component}/{node}: -> {precision}: {reason}"))

    def to_json(self) -> dict:
        return {"preset": self.preset, "changes": list(self.changes), "summary": self.summary(), "entries": [asdict(e) for e in self.entries]}

    @classmethod
    def from_json(cls, data: dict) -> PrecisionPlan:
        return cls(tuple(PlanEntry(**e) for e in data["entries"]), data["preset"], tuple(data.get("changes", ())))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> PrecisionPlan:
        return cls.from_json(json.loads(path.read_text()))


def annotate(graphs: dict[str, onnx.ModelProto], rules: tuple[tuple[str, PrecisionRule], ...], preset: str, role_patterns: RolePatterns = ()) -> PrecisionPlan:
    """Apply ``rules`` (first match wins) to every node of every component graph.

    Integer precisions only apply to nodes that carry a weight (MatMul/Gemm/Conv with a constant
    operand); a rule asking INT8 of, say, a Reshape does not match it and the next rule is tried.
    """
    entries: list[PlanEntry] = []
    for component, model in graphs.items():
        for info in classify_graph(model, role_patterns):
            for origin, rule in rules:
                if not rule.match.matches(component, info):
                    continue
                table = rule.precision == "int4" and info.op_type == "Gather" and info.role == "embeddings"  # INT4 embedding table: GatherBlockQuantized (backends.base.adapt_plan)
                # The KV cache (role kv_cache) is INT8 only where a rule names the role: a blanket INT8 rule means weights.
                cache = info.role == "kv_cache" and rule.precision == "int8" and rule.match.role == "kv_cache"
                if not table and not cache and rule.precision in INTEGER and (info.weight is None or info.op_type not in WEIGHT_OPS):
                    continue
                if not table and rule.precision == "int4" and info.op_type != "MatMul":
                    continue  # MatMulNBits replaces MatMul only
                precision = rule.precision or "float"
                entries.append(
                    PlanEntry(
                        component=component,
                        node=info.name,
                        op_type=info.op_type,
                        role=info.role,
                        module=info.module,
                        weight=info.weight,
                        precision=precision,
                        granularity=rule.granularity if precision in INTEGER else None,
                        block_size=rule.block_size if precision == "int4" and rule.granularity == "per_block" else None,
                        symmetric=rule.symmetric,
                        rule=f"{origin}: {rule.describe()}",
                        why=rule.why,
                        activations=rule.activations if precision == "int4" else None,
                    )
                )
                break
            else:  # pragma: no cover - presets end with a catch-all
                entries.append(PlanEntry(component, info.name, info.op_type, info.role, info.module, info.weight, "float", None, None, True, "none", "no rule matched"))
    return PrecisionPlan(tuple(entries), preset)
