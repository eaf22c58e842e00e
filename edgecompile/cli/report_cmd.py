"""``edgecompile report DIR...``: the seed-002 table, the tier Pareto view and plots over build directories."""

from __future__ import annotations

from pathlib import Path

import click

from edgecompile.cli.common import handle_errors


@click.command("report")
@click.argument("build_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("build/report"), show_default=True, help="Where report.md, report.html, report.json and the PNGs go.")
@handle_errors
def report_cmd(build_dirs: tuple[Path, ...], out: Path) -> None:
    """Aggregate build directories (skip anything that is not one, e.g. a sweep's recipes/ folder)."""
    import json

    from edgecompile.builddir.atomic import write_json, write_text
    from edgecompile.reports.aggregate import aggregate_images, aggregate_markdown, collect, pareto_view
    from edgecompile.reports.build_report import refresh_build_reports
    from edgecompile.reports.html import html_page

    dirs = [d for d in build_dirs if (d / "build.json").is_file()]
    if not dirs:
        from edgecompile.errors import InputError

        raise InputError(f"none of {', '.join(map(str, build_dirs))} is an edgecompile build directory (no build.json)")
    for d in dirs:
        refresh_build_reports(d)
    rows = collect(dirs)
    markdown = aggregate_markdown(rows)
    images = aggregate_images(rows)
    out.mkdir(parents=True, exist_ok=True)
    for caption, png in images.items():
        (out / f"{caption.replace(' ', '_')}.png").write_bytes(png)
    key, tiers, _ = pareto_view(rows)
    write_json(out / "report.json", {"objective": key, "rows": [{k: v for k, v in r.items() if k != "robustness"} for r in rows], "frontiers": {t: [p.name for p in v["frontier"]] for t, v in tiers.items()}})
    write_text(out / "report.md", markdown)
    write_text(out / "report.html", html_page("edgecompile report", markdown, images))
    click.echo(markdown)
    click.echo(f"report: {len(rows)} builds | {out / 'report.html'} | {json.dumps({t: [p.name for p in v['frontier']] for t, v in tiers.items()})}")
