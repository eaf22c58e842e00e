"""Aggregate build directories into the seed-002 table, the tier Pareto view and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecompile.config.target import TIER_BUDGETS
from edgecompile.errors import InputError
from edgecompile.reports import plots
from edgecompile.reports.markdown import table
from edgecompile.reports.pareto import Point, tier_frontiers


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(build_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per build: clean acc, RS, mCE, size, compression, latency, memory, fidelity."""
    rows = []
    for d in build_dirs:
        report = _json(d / "report.json") or _json(d / "validate" / "report.json")
        if report is None:
            raise InputError(f"{d}: no report.json; build it first ('edgecompile build')")
        m = report["metrics"]
        rob = _json(d / "robustness" / "robustness.json") or {}
        art = rob.get("artifact") or {}
        cosines = [v for k, v in m.items() if k.startswith("drift.") and k.endswith(".cosine_mean") and isinstance(v, (int, float))]
        rows.append(
            {
                "config": report["recipe"],
                "build_dir": str(d),
                "verdict": report["verdict"],
                "clean_acc": m.get("accuracy", art.get("clean")),
                "rs": art.get("rs"),
                "mce": art.get("mce"),
                "size_mb": m.get("size.artifact_mb"),
                "compression": m.get("size.compression_ratio"),
                "latency_ms": m.get("latency.p90_ms"),
                "memory_mb": m.get("memory.peak_mb"),
                "fidelity": min(cosines) if cosines else None,
                "robustness": rob or None,
            }
        )
    return rows


def objective(rows: list[dict[str, Any]]) -> str:
    """Accuracy when every build has it; else the worst output cosine vs the reference ('fidelity')."""
    return "clean_acc" if rows and all(r["clean_acc"] is not None for r in rows) else "fidelity"


def pareto_view(rows: list[dict[str, Any]]) -> tuple[str, dict[str, dict[str, list[Point]]], list[Point]]:
    key = objective(rows)
    pts = [Point(r["config"], r[key], r["latency_ms"], r["memory_mb"]) for r in rows]
    return key, tier_frontiers(pts), pts


def aggregate_markdown(rows: list[dict[str, Any]]) -> str:
    key, tiers, _ = pareto_view(rows)
    out = ["# edgecompile sweep report", "", table(["Config", "Clean Acc", "RS (up)", "mCE (down)", "Size (MB)", "Compression", "Latency p90 (ms)", "Peak mem (MB)", "Fidelity (min cos)", "Verdict"], [[r["config"], r["clean_acc"], r["rs"], r["mce"], r["size_mb"], r["compression"], r["latency_ms"], r["memory_mb"], r["fidelity"], r["verdict"]] for r in rows])]
    out += ["", f"## Pareto frontier per tier ({key} up, latency down, memory down; after the tier's budget)", ""]
    for tier, view in tiers.items():
        memory, latency = TIER_BUDGETS[tier]
        names = ", ".join(p.name for p in view["frontier"]) or "(no feasible configuration)"
        out.append(f"- **{tier}** (≤ {memory} MB, ≤ {latency:g} ms): {len(view['feasible'])} feasible; frontier: {names}")
    if key == "fidelity":
        out += ["", "_No labelled eval set in these builds: the accuracy axis is the worst output cosine vs the FP32 reference._"]
    return "\n".join(out) + "\n"


def aggregate_images(rows: list[dict[str, Any]]) -> dict[str, bytes]:
    if plots.available() is not None:
        return {}
    key, tiers, pts = pareto_view(rows)
    images = {f"pareto {tier}": plots.pareto_png(tier, TIER_BUDGETS[tier], pts, view["frontier"], key) for tier, view in tiers.items()}
    for r in rows:
        rob = r["robustness"]
        if rob and rob.get("artifact"):
            images[f"robustness {r['config']}"] = plots.robustness_heatmap_png(f"{r['config']}: accuracy under corruption", rob["artifact"]["accuracy"], rob["severities"])
    return images
