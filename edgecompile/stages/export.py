"""export: one ONNX graph per component, with a parity check against torch recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompile import progress
from edgecompile.backends.base import release_memory
from edgecompile.builddir.hashing import hash_tree
from edgecompile.errors import InputError, StageError
from edgecompile.models.export import PARITY_MIN_COSINE, check_parity, export_component, non_finite_parameters
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import ExportedGraphs, Upstream


class ExportStage(Stage):
    name = "export"
    output_type = ExportedGraphs

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        inputs = {"model": hash_tree(ctx.model_dir), "adapter": type(ctx.adapter).__name__, "opset": ctx.recipe.opset}
        options = ctx.recipe.model_options.model_dump(mode="json", exclude_defaults=True)
        if options:  # a tile grid changes the exported graphs; unset options keep older fingerprints valid
            inputs["model_options"] = options
        return inputs

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        summary: dict[str, Any] = {"family": ctx.adapter.family, "components": {}}
        bad = non_finite_parameters(ctx.loaded().model)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise InputError(f"{ctx.model_dir}: the checkpoint's weights hold NaN or Inf in {len(bad)} tensor(s): {shown}; every number measured from it would be meaningless")
        for spec in progress.track(ctx.adapter.components(ctx.loaded()), "export: components"):
            path = out / f"{spec.name}.onnx"
            export_component(spec, path, ctx.recipe.opset)
            parity = check_parity(spec, path)
            if not parity["cosine"] >= PARITY_MIN_COSINE:  # NaN fails too
                raise StageError(self.name, f"{spec.name}: exported graph disagrees with torch (cosine {parity['cosine']:.5f} < {PARITY_MIN_COSINE})")
            # The exported program and onnxscript's rewrite state hold the graph (and through it the
            # torch parameters' copies) until collected; the next component's export adds its own.
            release_memory()
            summary["components"][spec.name] = {"file": path.name, "inputs": list(spec.input_names), "outputs": list(spec.output_names), "dynamic_axes": {k: {str(a): d for a, d in v.items()} for k, v in spec.dynamic_axes.items()}, "parity": parity, "bytes": path.stat().st_size}
        return summary
