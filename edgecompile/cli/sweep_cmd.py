"""``edgecompile sweep --recipe R --grid G [--engine local|ray]``: build every grid point, reusing stages.

Each point is built in a sibling directory of the sweep root; points that would build the same
artifact are merged (sweep.json says which and why); a failed point is reported and the others go
on. The exit code is 0 when every point was built (gate verdicts are the report's business), 5
when a point failed to build, 3 when none could be.

Output: one line per finished point and a summary line on stdout, the sweep's progress on stderr
(edgecompile.progress: a live bar on a TTY, periodic plain lines otherwise); ``-q``: the summary
line only; ``--json``: one object on stdout (the rows and counts), everything else on stderr.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgecompile.cli.common import handle_errors, recipe_path
from edgecompile.cli.output import echo, json_option, machine_output, quiet
from edgecompile.errors import ExitCode, StageError


def _line(row: dict[str, Any]) -> str:
    if row["state"] == "merged":
        return f"  {row['name']}: merged into {row['merged_into']} ({row['level']}): {row['why']}"
    if row["state"] == "failed":
        return f"  {row['name']}: FAILED in {row['phase']} after {row['attempts']} attempt(s): {row['error']}"
    ran = ", ".join(f"{s} {w:.1f}s" for s, w in row["ran"].items())
    return f"  {row['name']}: {row['verdict']} | reused: {', '.join(row['reused']) or '-'} | ran: {ran or '-'}"


@click.command("sweep")
@click.option("--recipe", required=True, help="Base recipe YAML file, or a recipe name in recipes/.")
@click.option("--grid", "grid", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Grid YAML: axes: {<dotted recipe field>: [values]} (model and target may be axes), optional resources: per phase.")
@click.option("--model", help="HF model directory, bundled model name, or a name in the local HF cache (unless the grid has a model axis).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Sweep root (default: build/sweep-<recipe>).")
@click.option("--reuse", "reuse", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True), help="Existing build directory whose unchanged stages may be reused (repeatable).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="local: one point after another here; ray: each point's phases as Ray tasks.")
@click.option("--address", help="Ray only: address of an existing cluster ('auto' or host:port); default: start a local one.")
@click.option("--cpus", type=click.IntRange(min=1), help="Ray only: CPUs of the local cluster (default: all of this machine's).")
@click.option("--retries", type=click.IntRange(min=0, max=10), default=1, show_default=True, help="Retries of a point's failed phase (bad input is never retried).")
@json_option
@handle_errors
def sweep_cmd(recipe: str, grid: Path, model: str | None, out: Path | None, reuse: tuple[Path, ...], engine: str, address: str | None, cpus: int | None, retries: int, as_json: bool) -> None:
    """Build recipe x grid into sibling build directories; then 'edgecompile report <root>/*'."""
    with machine_output(as_json) as emit:
        code = _sweep(recipe, grid, model, out, reuse, engine, address, cpus, retries, emit if as_json else None)
    if code:
        sys.exit(code)


def _sweep(recipe: str, grid: Path, model: str | None, out: Path | None, reuse: tuple[Path, ...], engine: str, address: str | None, cpus: int | None, retries: int, emit: Callable[[dict[str, Any]], None] | None) -> int:
    from edgecompile.sweep import SWEEP_FILE, run_sweep

    if engine == "local" and (address or cpus):
        raise click.UsageError("--address and --cpus are for --engine ray")
    path = recipe_path(recipe)
    root = out or Path("build") / f"sweep-{path.stem}"
    executor = None
    if engine == "ray":
        from edgecompile.sweep.ray_engine import RayExecutor

        executor = RayExecutor(address=address, num_cpus=cpus, max_retries=retries)
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet() else contextlib.nullcontext():  # -q: the stages' lines too
            rows = run_sweep(path, grid, root, model, reuse, lambda row: echo(_line(row)), executor=executor, retries=retries)
    finally:
        if executor is not None:
            executor.close()
    built = [r for r in rows if r["state"] == "built"]
    merged = [r for r in rows if r["state"] == "merged"]
    failed = [r for r in rows if r["state"] == "failed"]
    passed = [r for r in built if r["verdict"] == "pass"]
    code = 0
    if failed:
        code = ExitCode.BAD_INPUT if not built and all(r["exit_code"] == ExitCode.BAD_INPUT for r in failed) else StageError.exit_code
    if emit is not None:
        counts = {"points": len(rows), "built": len(built), "passed": len(passed), "merged": len(merged), "failed": len(failed)}
        emit({"ok": not failed, "command": "sweep", "engine": engine, "exit_code": int(code), "root": str(root.resolve()), "sweep_json": str((root / SWEEP_FILE).resolve()), **counts, "rows": rows})
    else:
        click.echo(f"sweep ({engine}): {len(rows)} points: {len(built)} built ({len(passed)} passed all gates), {len(merged)} merged, {len(failed)} failed | {root / SWEEP_FILE}")
    return int(code)
