"""``edgecompile report DIR...``: the seed-002 table, the tier Pareto view and plots over build directories."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgecompile.cli.common import handle_errors
from edgecompile.cli.output import echo, json_option, machine_output


@click.command("report")
@click.argument("build_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("-o", "--output", "--out", "out", type=click.Path(path_type=Path, file_okay=False), default=Path("build/report"), show_default=True, help="Where report.md, report.html, report.json and the PNGs go.")
@json_option
@handle_errors
def report_cmd(build_dirs: tuple[Path, ...], out: Path, as_json: bool) -> None:
    """Aggregate build directories (skip anything that is not one, e.g. a sweep's recipes/ folder).

    Builds are grouped by model and task; each group gets its own table and one Pareto plot per
    tier with the configurations that fit that tier. Prints the Markdown report (or, with --json,
    one JSON object) on stdout.
    """
    from edgecompile.builddir.atomic import write_json, write_text
    from edgecompile.errors import InputError
    from edgecompile.reports import plots
    from edgecompile.reports.aggregate import aggregate_images, aggregate_markdown, collect, frontiers_json, sweep_view
    from edgecompile.reports.build_report import refresh_build_reports
    from edgecompile.reports.html import sweep_page

    with machine_output(as_json) as emit:
        dirs = [d for d in build_dirs if (d / "build.json").is_file()]
        if not dirs:
            raise InputError(f"none of {', '.join(map(str, build_dirs))} is an edgecompile build directory (no build.json)")
        for d in dirs:
            refresh_build_reports(d)
        rows = collect(dirs)
        markdown = aggregate_markdown(rows)
        images = aggregate_images(rows)
        view = sweep_view(rows)
        out.mkdir(parents=True, exist_ok=True)
        for caption, png in images.items():
            (out / f"{caption.replace(' ', '_')}.png").write_bytes(png)
        frontiers = frontiers_json(view["groups"])
        groups = [{"model": g["model"], "task": g["task"], "family": g["family"], "slug": g["slug"], "objective": g["objective"], "objective_why": g["objective_why"], "builds": [r["label"] for r in g["rows"]]} for g in view["groups"]]
        summary = {"groups": groups, "rows": [{k: v for k, v in r.items() if k != "robustness"} for r in rows], "frontiers": frontiers}
        write_json(out / "report.json", summary)
        write_text(out / "report.md", markdown)
        write_text(out / "report.html", sweep_page(view, images, plots.available()))
        if as_json:
            emit({"ok": True, "command": "report", "builds": len(rows), "html": str(out / "report.html"), **summary})
            return
        click.echo(markdown)
        echo(f"report: {len(rows)} builds in {len(groups)} group(s) | {out / 'report.html'}")
        sys.stdout.flush()  # `edgecompile report ... | head`: a closed pipe surfaces here and exits 0
