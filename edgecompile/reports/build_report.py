"""Write one build's report.md, report.html (self-contained) and report.junit.xml next to report.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecompile.builddir.atomic import write_text
from edgecompile.reports import plots
from edgecompile.reports.html import html_page
from edgecompile.reports.junit import junit_xml
from edgecompile.reports.markdown import build_markdown

ROBUSTNESS_FILE = Path("robustness") / "robustness.json"


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def build_images(layers: list[dict[str, Any]] | None, robustness: dict[str, Any] | None) -> dict[str, bytes]:
    """Per-build plots (empty when matplotlib is missing)."""
    if plots.available() is not None:
        return {}
    images: dict[str, bytes] = {}
    if layers:
        images["per-layer error"] = plots.layer_bars_png(layers)
    for who in ("artifact", "reference"):
        if robustness and robustness.get(who):
            images[f"robustness ({who})"] = plots.robustness_heatmap_png(f"accuracy under corruption ({who})", robustness[who]["accuracy"], robustness["severities"])
    return images


def write_build_reports(validate_dir: Path, report: dict[str, Any], robustness: dict[str, Any] | None = None, dest: Path | None = None) -> dict[str, Path]:
    """Render the report files into ``dest`` (default ``validate_dir``; validate calls this right after report.json)."""
    dest = dest or validate_dir
    comparison = _read(validate_dir / "comparison.json")
    layers_doc = _read(validate_dir / "layers.json")
    layers = layers_doc["layers"] if layers_doc else None
    markdown = build_markdown(report, comparison, layers, robustness)
    missing = plots.available()
    if missing:
        markdown += f"\n_Plots left out: {missing}._\n"
    paths = {"markdown": dest / "report.md", "html": dest / "report.html", "junit": dest / "report.junit.xml"}
    write_text(paths["markdown"], markdown)
    write_text(paths["html"], html_page(f"edgecompile {report.get('recipe')}", markdown, build_images(layers, robustness)))
    write_text(paths["junit"], junit_xml(report))
    return paths


def refresh_build_reports(build_dir: Path) -> dict[str, Path]:
    """Re-render a build's reports at the build directory's top (with robustness results, if any).

    validate/ is left alone: it is a stage output whose hash the manifest checks.
    """
    report = _read(build_dir / "validate" / "report.json")
    if report is None:
        from edgecompile.errors import InputError

        raise InputError(f"{build_dir}: no validate/report.json; run 'edgecompile build' or 'edgecompile validate' first")
    return write_build_reports(build_dir / "validate", report, _read(build_dir / ROBUSTNESS_FILE), dest=build_dir)
