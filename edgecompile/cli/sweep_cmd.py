"""``edgecompile sweep --recipe R --grid G``: build every grid point in sibling directories, reusing stages."""

from __future__ import annotations

from pathlib import Path

import click

from edgecompile.cli.common import handle_errors, recipe_path


@click.command("sweep")
@click.option("--recipe", required=True, help="Base recipe YAML file, or a recipe name in recipes/.")
@click.option("--grid", "grid", required=True, type=click.Path(path_type=Path, dir_okay=False, exists=True), help="Grid YAML: axes: {<dotted recipe field>: [values]}.")
@click.option("--model", help="HF model directory, bundled model name, or a name in the local HF cache.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Sweep root (default: build/sweep-<recipe>).")
@click.option("--reuse", "reuse", multiple=True, type=click.Path(path_type=Path, file_okay=False, exists=True), help="Existing build directory whose unchanged stages may be reused (repeatable).")
@handle_errors
def sweep_cmd(recipe: str, grid: Path, model: str | None, out: Path | None, reuse: tuple[Path, ...]) -> None:
    """Build recipe x grid into sibling build directories; then 'edgecompile report <root>/*'."""
    from edgecompile.sweep import run_sweep

    path = recipe_path(recipe)
    root = out or Path("build") / f"sweep-{path.stem}"

    def on_point(name: str, reused: list[str], results: list, report: dict) -> None:
        ran = ", ".join(f"{r.stage} {r.wall_s:.1f}s" for r in results if not r.skipped)
        click.echo(f"  {name}: {report['verdict']} | reused: {', '.join(reused) or '-'} | ran: {ran or '-'}")

    rows = run_sweep(path, grid, root, model, reuse, on_point)
    failed = [r["name"] for r in rows if r["verdict"] != "pass"]
    click.echo(f"sweep: {len(rows)} points, {len(rows) - len(failed)} passed all gates | {root}")
