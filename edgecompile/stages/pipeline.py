"""Run the stages in order up to a given one, skipping those whose inputs did not change."""

from __future__ import annotations

from collections.abc import Callable

from edgecompile.stages import STAGE_ORDER
from edgecompile.stages.annotate import AnnotateStage
from edgecompile.stages.base import Stage, StageResult, run_stage
from edgecompile.stages.build import BuildStage
from edgecompile.stages.calibrate import CalibrateStage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.export import ExportStage
from edgecompile.stages.validate import ValidateStage

STAGES: dict[str, Stage] = {s.name: s for s in (ExportStage(), AnnotateStage(), CalibrateStage(), BuildStage(), ValidateStage())}


def run_until(ctx: BuildContext, last: str, *, force: frozenset[str] = frozenset(), on_result: Callable[[StageResult], None] | None = None) -> list[StageResult]:
    """Run every stage up to and including ``last``."""
    results: list[StageResult] = []
    for name in STAGE_ORDER[: STAGE_ORDER.index(last) + 1]:
        result = run_stage(ctx, STAGES[name], force=name in force, completed=tuple(r.stage for r in results))
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
