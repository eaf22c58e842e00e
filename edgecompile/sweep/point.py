"""The work of one grid point in one phase: plain paths in, a plain dict out.

These functions run in the sweep's own process (local engine) or in a Ray worker (ray engine), so
they take only picklable arguments (paths and strings), open their own build context (taking the
point directory's lock) and release it before returning. A point is built in phases so that the
driver can merge points between them: ``prepare`` runs export..calibrate and returns the build
stage's input fingerprint (two points with the same one would build the same artifact), ``build``
returns the artifact's content hash, ``validate`` measures and publishes the report.

Stage reuse across points and processes goes through the file system: ``reuse_from`` names the
sibling point directories (and the user's ``--reuse`` builds); the pipeline's reuse hook copies a
stage from the first one whose record has the same input fingerprint. On a multi-machine Ray
cluster the sweep root must be on storage every node sees (a shared or network file system).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edgecompile.builddir.atomic import write_json
from edgecompile.builddir.hashing import hash_value
from edgecompile.errors import EdgecompileError, ExitCode, InputError
from edgecompile.stages.base import stage_inputs
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import STAGES, run_until

LAST = {"export": "calibrate", "prepare": "calibrate", "build": "build", "validate": "validate"}


def _publish(ctx: BuildContext) -> dict[str, Any]:
    """Copy validate/report.json to the point's top (what 'build' does; stages.validate is not importable here)."""
    report = json.loads(ctx.path("validate", "report.json").read_text())
    write_json(ctx.path("report.json"), report)
    return report


def run_phase(phase: str, recipe: str, model: str | None, build_dir: str, reuse_from: list[str]) -> dict[str, Any]:
    """Run one phase of one point; failures come back as data (``error``, ``exit_code``), never raise."""
    start = time.perf_counter()
    ctx = None
    try:
        ctx = BuildContext.create(Path(recipe), model, Path(build_dir))
        sources = [Path(p) for p in reuse_from if Path(p).resolve() != ctx.build_dir]
        results = run_until(ctx, LAST[phase], reuse_from=sources)
        by_stage = {r.stage: r for r in results}
        out: dict[str, Any] = {
            "ok": True,
            "stages": {r.stage: {"skipped": r.skipped, "wall_s": round(r.wall_s, 3), "reused_from": r.reused_from} for r in results},
            "wall_s": 0.0,
        }
        if phase in ("export", "prepare"):
            inputs = stage_inputs(ctx, STAGES["build"], by_stage)
            out["build_fingerprint"] = hash_value(inputs)
        if phase in ("build", "validate"):
            out["artifact_hash"] = ctx.manifest().stages["build"].outputs.get("build")
        if phase == "validate":
            report = _publish(ctx)
            out["verdict"] = report["verdict"]
            out["metrics"] = report["metrics"]
        out["wall_s"] = round(time.perf_counter() - start, 3)
        return out
    except EdgecompileError as exc:
        return {"ok": False, "error": str(exc), "exit_code": exc.exit_code, "retryable": not isinstance(exc, InputError), "wall_s": round(time.perf_counter() - start, 3)}
    except Exception as exc:  # a bug: still only this point's failure
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "exit_code": ExitCode.INTERNAL, "retryable": True, "wall_s": round(time.perf_counter() - start, 3)}
    finally:
        if ctx is not None:
            ctx.close()


def export_key(recipe: str, model: str | None, build_dir: str) -> str:
    """The export stage's input fingerprint of a point (same model, adapter, opset, tools: one export)."""
    ctx = BuildContext.create(Path(recipe), model, Path(build_dir))
    try:
        return hash_value(stage_inputs(ctx, STAGES["export"], {}))
    finally:
        ctx.close()
