"""build: the backend turns the plan, the transformed float graphs and the ranges into the artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgecompile.backends.base import BuildInputs, artifact_bytes, release_memory
from edgecompile.backends.registry import get_backend
from edgecompile.bundle import BUNDLE_DIR
from edgecompile.bundle.writer import write_bundle
from edgecompile.data.sources import calibration_samples
from edgecompile.errors import BackendUnavailable
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import EFFECTIVE_PLAN, BuiltArtifact, Upstream


class BuildStage(Stage):
    name = "build"
    requires = ("export", "annotate", "transform", "calibrate")
    output_type = BuiltArtifact

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        pruning = ctx.recipe.token_pruning  # residual_bits and weights are read here, not only in calibrate
        return {"target": ctx.target.model_dump_json(), "quantization": ctx.recipe.quantization.model_dump_json(), "backend_options": str(sorted(ctx.recipe.backend_options.items())),
                **({"token_pruning": pruning.model_dump_json()} if pruning is not None else {})}

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        backend = get_backend(ctx.target.backend)
        available = backend.availability()
        if not available.can_build:
            raise BackendUnavailable(f"backend '{backend.name}' cannot build on this machine: {available.reason}")
        # Memory: the torch model calibrate loaded is not needed here (backends that calibrate again
        # load it back through ``calibration_feeds``), and the graphs read for the plan are dropped
        # before the backend loads its own copy: a graph with embedded weights is read whole.
        ctx.release_weights()
        release_memory()
        graphs_in = upstream.graphs()
        graphs = {c: onnx.load(str(p), load_external_data=False) for c, p in graphs_in.items()}
        ranges = upstream.calibrate.ranges()
        plan = backend.adapt_plan(upstream.annotate.plan(), ctx.target, ranges, graphs)
        del graphs
        release_memory()
        plan.save(out / EFFECTIVE_PLAN)
        cal = ctx.recipe.calibration

        def calibration_feeds(component: str):  # noqa: ANN202 - Iterator[Feeds]
            return ctx.adapter.calibration_feeds(ctx.loaded(), calibration_samples(cal.set, cal.samples), component)

        transform = upstream.transform
        artifact = backend.build(
            BuildInputs(
                graphs_in, plan, ranges, ctx.target, ctx.recipe, out, calibration_feeds, model_dir=ctx.model_dir, adapter=ctx.adapter,
                prequantized=dict(transform.prequantized) if transform is not None else {},
                token_pruning=upstream.calibrate.keep_schedule() if ctx.recipe.token_pruning is not None else None,
            )
        )
        artifact.save(out)
        bundle = _bundle(ctx, out, artifact, upstream)
        sizes = {c: artifact_bytes(out / f) for c, f in artifact.components.items() if (out / f).exists()}
        return {"backend": backend.name, "components": artifact.components, "bytes": sizes, "plan_changes": list(plan.changes), "runs_here": artifact.runs_here, "notes": artifact.notes, "bundle": {"dir": f"build/{BUNDLE_DIR}", "files": len(bundle["files"]), "notes": bundle["notes"]}}


def _bundle(ctx: BuildContext, out: Path, artifact: Any, upstream: Upstream) -> dict[str, Any]:
    """The deployable bundle beside the artifact (edgecompile.bundle): tokenizer, processor, I/O, genai config."""
    generation, text_config = None, None
    if ctx.adapter.family == "generative":
        from dataclasses import asdict

        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(ctx.model_dir)
        generation = asdict(ctx.adapter.generation_spec(config))
        if ctx.recipe.token_pruning is not None:
            generation["visual_token_mask"] = True  # the runtime feeds the prompt's image-token mask
        text_config = config.get_text_config(decoder=True)
    target = {"name": ctx.target.name, "arch": ctx.target.arch, "backend": ctx.target.backend}
    return write_bundle(out, artifact.backend, artifact.components, upstream.export.files, ctx.model_dir, generation=generation, text_config=text_config, target=target)
