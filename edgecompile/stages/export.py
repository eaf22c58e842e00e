"""export: one ONNX graph per component, with a parity check against torch recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompile.builddir.hashing import hash_tree
from edgecompile.errors import StageError
from edgecompile.models.export import PARITY_MIN_COSINE, check_parity, export_component
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import ExportedGraphs, Upstream


class ExportStage(Stage):
    name = "export"
    output_type = ExportedGraphs

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {"model": hash_tree(ctx.model_dir), "adapter": type(ctx.adapter).__name__, "opset": ctx.recipe.opset}

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        summary: dict[str, Any] = {"family": ctx.adapter.family, "components": {}}
        for spec in ctx.adapter.components(ctx.loaded()):
            path = out / f"{spec.name}.onnx"
            export_component(spec, path, ctx.recipe.opset)
            parity = check_parity(spec, path)
            if parity["cosine"] < PARITY_MIN_COSINE:
                raise StageError(self.name, f"{spec.name}: exported graph disagrees with torch (cosine {parity['cosine']:.5f} < {PARITY_MIN_COSINE})")
            summary["components"][spec.name] = {"file": path.name, "inputs": list(spec.input_names), "outputs": list(spec.output_names), "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in spec.dynamic_axes.items()}, "parity": parity, "bytes": path.stat().st_size}
        return summary
