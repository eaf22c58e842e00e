"""Write one build's report.md, report.html (self-contained) and report.junit.xml next to report.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecompile.builddir.atomic import write_text
from edgecompile.reports import plots
from edgecompile.reports.html import build_page
from edgecompile.reports.junit import junit_xml
from edgecompile.reports.markdown import build_markdown
from edgecompile.reports.view import build_view

ROBUSTNESS_FILE = Path("robustness") / "robustness.json"
PLAN_FILE = Path("annotate") / "plan.json"
VLMQ_FILE = Path("transform") / "vlmq_importance.json"
PRUNING_FILE = Path("calibrate") / "token_pruning.json"


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def build_images(view: dict[str, Any], plan: dict[str, Any] | None, all_layers: list[dict[str, Any]] | None = None) -> dict[str, bytes]:
    """Per-build plots, keyed by the names the template places them under (empty without matplotlib)."""
    if plots.available() is not None:
        return {}
    images: dict[str, bytes] = {}
    if view["components"] and any(c["latency_ms"] is not None or c["size_mb"] is not None for c in view["components"]):
        images["latency and size"] = plots.latency_size_png(view["components"])
    if plan and any(e.get("weight") for e in plan.get("entries", [])):
        images["precision plan"] = plots.precision_by_role_png(plan)
    if all_layers or view["layers"]:
        images["per-layer error"] = plots.layer_bars_png(all_layers or view["layers"])
    if any(r["metric"] in ("generation.ttft_ms", "generation.decode_tokens_per_s") for r in view["generation"]):
        images["generation"] = plots.generation_png(view["generation"])
    if view.get("vlmq"):
        images["token importance"] = plots.vlmq_importance_png(view["vlmq"])
    if view.get("pruning") and view["pruning"]["layers"]:
        images["token pruning"] = plots.keep_schedule_png(view["pruning"])
    robustness = view["robustness"]
    for who in ("artifact", "reference"):
        if robustness and robustness.get(who):
            images[f"robustness ({who})"] = plots.robustness_heatmap_png(f"accuracy under corruption ({who})", robustness[who]["accuracy"], robustness["severities"])
    return images


def write_build_reports(validate_dir: Path, report: dict[str, Any], robustness: dict[str, Any] | None = None, dest: Path | None = None) -> dict[str, Path]:
    """Render the report files into ``dest`` (default ``validate_dir``; validate calls this right after report.json)."""
    from edgecompile.reports.view import layer_rows

    dest = dest or validate_dir
    comparison = _read(validate_dir / "comparison.json")
    layers_doc = _read(validate_dir / "layers.json")
    layers = layers_doc["layers"] if layers_doc else None
    plan = _read(validate_dir.parent / PLAN_FILE)
    view = build_view(report, comparison, layers, plan, robustness, vlmq=_read(validate_dir.parent / VLMQ_FILE), pruning=_read(validate_dir.parent / PRUNING_FILE))
    missing = plots.available()
    markdown = build_markdown(view)
    if missing:
        markdown += f"\n_Plots left out: {missing}._\n"
    paths = {"markdown": dest / "report.md", "html": dest / "report.html", "junit": dest / "report.junit.xml"}
    write_text(paths["markdown"], markdown)
    write_text(paths["html"], build_page(view, build_images(view, plan, layer_rows(layers, plan)), missing))
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
    from edgecompile.device.merge import merged_report  # the device's results, when 'edgecompile.device validate' ran

    return write_build_reports(build_dir / "validate", merged_report(build_dir, report), _read(build_dir / ROBUSTNESS_FILE), dest=build_dir)
