"""annotate: the precision plan, from the recipe's rules and preset over the exported graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from edgecompile.builddir.hashing import hash_value
from edgecompile.plan.plan import PrecisionPlan, annotate
from edgecompile.plan.rules import rules_for
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import PLAN_FILE, AnnotatedPlan, Upstream
from edgecompile.weightless_graph import graph_structure

class AnnotateStage(Stage):
    name = "annotate"
    requires = ("export",)
    output_type = AnnotatedPlan

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        rules = [r.model_dump(mode="json") for r in ctx.recipe.rules]
        q = ctx.recipe.quantization
        return {"role_patterns": str(ctx.adapter.role_patterns), "preset": ctx.recipe.precision_preset, "rules": hash_value(rules), "int4_block": q.int4_block_size, **({"int4_granularity": q.int4_granularity} if q.int4_granularity != "per_block" else {})}

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        graphs = {c: graph_structure(p) for c, p in upstream.export.files.items()}  # names and shapes only: the rules never read a weight
        rules = rules_for(ctx.recipe.precision_preset, ctx.recipe.rules, ctx.recipe.quantization.int4_block_size, ctx.recipe.quantization.int4_granularity)
        plan = annotate(graphs, rules, ctx.recipe.precision_preset, tuple(ctx.adapter.role_patterns))
        plan.save(out / PLAN_FILE)
        return {"summary": plan.summary()}
