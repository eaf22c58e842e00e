"""build: the backend turns the plan and ranges into the deployable artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from edgecompile.backends.base import Artifact, BuildInputs, artifact_bytes
from edgecompile.backends.registry import get_backend
from edgecompile.calibration.ranges import load_ranges
from edgecompile.errors import BackendUnavailable
from edgecompile.stages.annotate import load_plan
from edgecompile.stages.base import Stage, upstream
from edgecompile.stages.calibrate import RANGES_FILE
from edgecompile.stages.context import BuildContext
from edgecompile.stages.data_sources import calibration_samples
from edgecompile.stages.export import exported_files

EFFECTIVE_PLAN = "plan.effective.json"


class BuildStage(Stage):
    name = "build"
    requires = ("export", "annotate", "calibrate")

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        return {**upstream(ctx, self.requires), "target": ctx.target.model_dump_json(), "quantization": ctx.recipe.quantization.model_dump_json(), "backend_options": str(sorted(ctx.recipe.backend_options.items()))}

    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        backend = get_backend(ctx.target.backend)
        available = backend.availability()
        if not available.can_build:
            raise BackendUnavailable(f"backend '{backend.name}' cannot build on this machine: {available.reason}")
        exported = exported_files(ctx)
        graphs = {c: onnx.load(str(p), load_external_data=False) for c, p in exported.items()}
        ranges = load_ranges(ctx.path("calibrate", RANGES_FILE))
        plan = backend.adapt_plan(load_plan(ctx), ctx.target, ranges, graphs)
        plan.save(out / EFFECTIVE_PLAN)
        cal = ctx.recipe.calibration

        def calibration_feeds(component: str):  # noqa: ANN202 - Iterator[Feeds]
            return ctx.adapter.calibration_feeds(ctx.loaded(), calibration_samples(cal.set, cal.samples), component)

        artifact = backend.build(BuildInputs(exported, plan, ranges, ctx.target, ctx.recipe, out, calibration_feeds, model_dir=ctx.model_dir, adapter=ctx.adapter))
        artifact.save(out)
        sizes = {c: artifact_bytes(out / f) for c, f in artifact.components.items() if (out / f).exists()}
        return {"backend": backend.name, "components": artifact.components, "bytes": sizes, "plan_changes": list(plan.changes), "runs_here": artifact.runs_here, "notes": artifact.notes}


def load_artifact(ctx: BuildContext) -> tuple[Path, Artifact]:
    folder = ctx.path("build")
    return folder, Artifact.load(folder)
