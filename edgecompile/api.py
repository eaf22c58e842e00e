"""The Python API: the same pipeline and verdicts as the CLI, as functions returning a result object.

    import edgecompile
    result = edgecompile.build(recipe="x86-cpu", model="shapes-clip", out="build/x86-cpu")
    print(result.verdict, result.metrics["accuracy.drop"], result.artifacts)

Errors are the CLI's exception classes (edgecompile.errors): InputError (exit 3),
BackendUnavailable (4), StageError (5); each carries ``exit_code``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompile.errors import ExitCode


@dataclass(frozen=True)
class BuildResult:
    """A build directory's verdict, gates, metrics and artifact paths (from its report.json)."""

    build_dir: Path
    verdict: str  # "pass" | "fail" | "pending"
    gates: list[dict[str, Any]]
    metrics: dict[str, Any]
    artifacts: dict[str, Path]
    report: dict[str, Any] = field(repr=False)

    @property
    def exit_code(self) -> int:
        """What the CLI would exit with for this verdict."""
        return {"pass": ExitCode.PASSED, "pending": ExitCode.PENDING}.get(self.verdict, ExitCode.GATE_FAILED)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def load_report(build_dir: str | Path) -> BuildResult:
    """The result recorded in a build directory (its latest report.json)."""
    build_dir = Path(build_dir).resolve()
    path = build_dir / "report.json"
    if not path.is_file():
        path = build_dir / "validate" / "report.json"
    if not path.is_file():
        from edgecompile.errors import InputError

        raise InputError(f"{build_dir}: no report.json; run edgecompile.build first")
    report = json.loads(path.read_text())
    artifacts = {c: build_dir / rel for c, rel in report.get("artifacts", {}).items()}
    return BuildResult(build_dir, report["verdict"], report["gates"], report["metrics"], artifacts, report)


def build(recipe: str | Path, model: str | Path | None = None, out: str | Path | None = None, *, force: bool = False) -> BuildResult:
    """Run every stage (export → annotate → transform → calibrate → build → validate); stages whose inputs did not change are skipped."""
    from edgecompile.config.resolve import resolve
    from edgecompile.stages import STAGE_ORDER
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until
    from edgecompile.stages.validate import publish_report

    ctx = BuildContext.create(resolve("recipe", str(recipe)), str(model) if model is not None else None, Path(out) if out is not None else None)
    try:
        run_until(ctx, "validate", force=frozenset(STAGE_ORDER) if force else frozenset())
        publish_report(ctx)
    finally:
        ctx.close()  # release the build directory's lock: the call is over
    return load_report(ctx.build_dir)


def validate(build_dir: str | Path) -> BuildResult:
    """Re-validate an existing build directory (always re-measures)."""
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until
    from edgecompile.stages.validate import publish_report

    ctx = BuildContext.open(Path(build_dir))
    try:
        run_until(ctx, "validate", force=frozenset({"validate"}))
        publish_report(ctx)
    finally:
        ctx.close()
    return load_report(ctx.build_dir)


def sweep(recipe: str | Path, grid: str | Path, root: str | Path, model: str | Path | None = None) -> list[BuildResult]:
    """Build every point of a grid into sibling directories of ``root``; one result per point."""
    from edgecompile.config.resolve import resolve
    from edgecompile.sweep import run_sweep

    rows = run_sweep(resolve("recipe", str(recipe)), Path(grid), Path(root), str(model) if model is not None else None)
    return [load_report(row["build_dir"]) for row in rows if row["state"] == "built"]  # merged and failed points: see <root>/sweep.json
