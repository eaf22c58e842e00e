"""Run the stages in order up to a given one, handing each stage's typed output to the ones after it.

This is the only module that knows every stage: stages never import each other; they declare what
they require and receive it from here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from edgecompile.builddir.manifest import StageRecord
from edgecompile.errors import InputError
from edgecompile.stages import STAGE_ORDER
from edgecompile.stages.annotate import AnnotateStage
from edgecompile.stages.base import Stage, StageResult, recorded_result, run_stage
from edgecompile.stages.build import BuildStage
from edgecompile.stages.calibrate import CalibrateStage
from edgecompile.stages.context import BuildContext, read_manifest
from edgecompile.stages.export import ExportStage
from edgecompile.stages.transform import TransformStage
from edgecompile.stages.validate import ValidateStage

STAGES: dict[str, Stage] = {s.name: s for s in (ExportStage(), AnnotateStage(), TransformStage(), CalibrateStage(), BuildStage(), ValidateStage())}
assert tuple(STAGES) == STAGE_ORDER


def _reuser(ctx: BuildContext, sources: Sequence[Path]) -> Callable[[str, str], tuple[StageRecord, Path] | None]:
    """Copy a stage from a sibling build whose record has the same input fingerprint (sweeps)."""

    def reuse(stage: str, fingerprint: str) -> tuple[StageRecord, Path] | None:
        if stage == "validate":  # always measured in its own build
            return None
        for source in sources:
            record = read_manifest(source).stages.get(stage)
            if record is not None and record.fingerprint == fingerprint and (source / stage).is_dir():
                shutil.rmtree(ctx.path(stage), ignore_errors=True)
                shutil.copytree(source / stage, ctx.path(stage))
                return record, source
        return None

    return reuse


def run_until(
    ctx: BuildContext,
    last: str,
    *,
    force: frozenset[str] = frozenset(),
    on_result: Callable[[StageResult], None] | None = None,
    reuse_from: Sequence[Path] = (),
) -> list[StageResult]:
    """Run every stage up to and including ``last``; returns their results in order."""
    results: dict[str, StageResult] = {}
    reuse = _reuser(ctx, reuse_from) if reuse_from else None
    for name in STAGE_ORDER[: STAGE_ORDER.index(last) + 1]:
        result = run_stage(ctx, STAGES[name], results, force=name in force, reuse=reuse)
        results[name] = result
        if on_result is not None:
            on_result(result)
    return list(results.values())


def recorded(ctx: BuildContext, stage: str) -> StageResult:
    """The typed result of a stage completed earlier in this build directory (commands that read a build)."""
    result = recorded_result(ctx, stage)
    if result is None:
        raise InputError(f"{ctx.build_dir}: stage '{stage}' has not completed here; run 'edgecompile build' (or 'edgecompile {stage}') first")
    return result
