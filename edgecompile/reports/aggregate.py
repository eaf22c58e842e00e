"""Aggregate build directories into the seed-002 table, the tier Pareto view and plots.

Builds are grouped by (model, task) first: a CLIP's zero-shot accuracy and a LLaVA's answer
accuracy are different quantities and never share an axis, and two builds of one recipe for two
models are two rows, not one. Within a group the objective is accuracy when every build measured
one and the reference scores above chance; otherwise the worst output cosine vs the float
reference ("fidelity"), with the reason written next to it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from edgecompile.config.target import TIER_BUDGETS
from edgecompile.errors import InputError
from edgecompile.reports import plots
from edgecompile.reports.format import number, verdict_status
from edgecompile.reports.markdown import table
from edgecompile.reports.pareto import Point, tier_frontiers

TABLE_HEADER = ["Config", "Clean Acc", "RS (up)", "mCE (seed: abs drop, down)", "CE (norm. to FP32, down)", "Size (MB)", "Compression", "Latency p90 (ms)", "Peak mem (MB)", "Fidelity (min cos)", "Verdict"]


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _family(report: dict[str, Any]) -> str:
    family = (((report.get("stages") or {}).get("export") or {}).get("summary") or {}).get("family")
    if family:
        return str(family)
    return "generative" if any(k.startswith("generation.") for k in report.get("metrics", {})) else "dual_encoder"


_TASKS = {"dual_encoder": "zero-shot classification", "generative": "visual question answering"}


def collect(build_dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per build: clean acc, RS, mCE, size, compression, latency, memory, fidelity, model and task."""
    rows = []
    for d in build_dirs:
        report = _json(d / "report.json") or _json(d / "validate" / "report.json")
        if report is None:
            raise InputError(f"{d}: no report.json; build it first ('edgecompile build')")
        m = report["metrics"]
        rob = _json(d / "robustness" / "robustness.json") or {}
        art = rob.get("artifact") or {}
        cosines = [v for k, v in m.items() if k.startswith("drift.") and k.endswith(".cosine_mean") and isinstance(v, (int, float))]
        family = _family(report)
        model = str(report.get("model") or "?")
        rows.append(
            {
                "config": report["recipe"],
                "build_dir": str(d),
                "model": model,
                "model_name": Path(model).name or model,
                "family": family,
                "task": _TASKS.get(family, family),
                "tier": report.get("tier"),
                "verdict": report["verdict"],
                "status": verdict_status(report["verdict"]),
                "clean_acc": m.get("accuracy", art.get("clean")),
                "reference_acc": m.get("accuracy.reference"),
                "chance": m.get("accuracy.chance"),
                "rs": art.get("rs"),
                "mce": art.get("mce"),
                "ce": art.get("ce_normalised"),
                "size_mb": m.get("size.artifact_mb"),
                "compression": m.get("size.compression_ratio"),
                "latency_ms": m.get("latency.p90_ms"),
                "memory_mb": m.get("memory.peak_mb"),
                "fidelity": min(cosines) if cosines else None,
                "ttft_ms": m.get("generation.ttft_ms"),
                "decode_tokens_per_s": m.get("generation.decode_tokens_per_s"),
                "robustness": rob or None,
                "robustness_protocol": _protocol(rob) if rob else None,
                "merged": [],
            }
        )
    _attach_merged(rows)
    _label(rows)
    return rows


def _protocol(rob: dict[str, Any]) -> str:
    """How a robustness.json was measured, in words: rows with different protocols do not compare."""
    from edgecompile.robustness.robustness import is_full_protocol

    sev = rob.get("severities") or []
    corr = rob.get("corruptions") or []
    full = rob.get("full_protocol", is_full_protocol(corr, sev))
    return f"{len(corr)} corruptions x severities {','.join(map(str, sev))}, {rob.get('samples')} samples, seed {rob.get('seed')}" + ("" if full else " (NOT seed 002's full 10 x 1-5 protocol)")


def _attach_merged(rows: list[dict[str, Any]]) -> None:
    """Grid points a sweep merged into a reported build (from the sweep root's sweep.json)."""
    by_dir = {str(Path(r["build_dir"]).resolve()): r for r in rows}
    for root in {Path(r["build_dir"]).resolve().parent for r in rows}:
        doc = _json(root / "sweep.json")
        if not isinstance(doc, dict):
            continue
        for point in doc.get("points", []):
            if point.get("state") != "merged":
                continue
            row = by_dir.get(str(Path(point["build_dir"]).resolve()))
            if row is not None:
                row["merged"].append({"point": point["name"], "into": point["merged_into"], "level": point.get("level"), "why": point.get("why")})


def _label(rows: list[dict[str, Any]]) -> None:
    """A unique, short name per row: the recipe, plus the build directory's name where recipes repeat in a group."""
    seen = Counter((r["model"], r["family"], r["config"]) for r in rows)
    for r in rows:
        d = Path(r["build_dir"])
        r["label"] = r["config"] if seen[(r["model"], r["family"], r["config"])] == 1 else f"{r['config']} ({d.parent.name}/{d.name})"
        if r["merged"]:  # the table row stands for these grid points too
            r["label"] += f" (+{len(r['merged'])} merged)"


def groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (model, task), each with its objective and the reason for it."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["model"], r["family"]), []).append(r)
    named = Counter(Path(m).name for m, _ in out)
    result = []
    for (model, family), members in out.items():
        key, why = objective(members)
        name = Path(model).name if named[Path(model).name] == 1 else model
        result.append({"model": model, "name": name, "family": family, "task": _TASKS.get(family, family), "rows": members, "objective": key, "objective_why": why, "slug": re.sub(r"[^A-Za-z0-9]+", "-", f"{name}-{family}").strip("-")})
    return result


def objective(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(key, why): accuracy when every build has it and the reference beats chance; else fidelity, saying why."""
    if not rows:
        return "fidelity", "no builds"
    missing = [r["label"] if "label" in r else r["config"] for r in rows if r["clean_acc"] is None]
    if missing:
        return "fidelity", f"no accuracy in {', '.join(missing)} (eval set without labels or answers): the axis is the worst output cosine vs the float reference"
    low = [r for r in rows if r.get("reference_acc") is not None and r.get("chance") is not None and r["reference_acc"] <= r["chance"]]
    if len(low) == len(rows):
        r = low[0]
        return "fidelity", f"the float reference scores at or below chance on this eval set (accuracy {number(r['reference_acc'])} vs chance {number(r['chance'])}): the axis is the worst output cosine vs the float reference"
    return "clean_acc", "clean accuracy on the labelled eval set"


def pareto_view(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: its points and, per tier, the feasible points and their frontier."""
    views = []
    for g in groups(rows):
        key = g["objective"]
        pts = [Point(r["label"], r[key], r["latency_ms"], r["memory_mb"]) for r in g["rows"]]
        views.append({**g, "points": pts, "tiers": tier_frontiers(pts)})
    return views


def frontiers_json(views: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """group slug -> tier -> frontier names (for report.json and --json)."""
    return {v["slug"]: {t: [p.name for p in tv["frontier"]] for t, tv in v["tiers"].items()} for v in views}


def _row_cells(r: dict[str, Any]) -> list[Any]:
    return [r["label"], r["clean_acc"], r["rs"], r["mce"], r.get("ce"), r["size_mb"], r["compression"], r["latency_ms"], r["memory_mb"], r["fidelity"], r["verdict"]]


def aggregate_markdown(rows: list[dict[str, Any]]) -> str:
    out = ["# edgecompile sweep report", ""]
    for v in pareto_view(rows):
        out += [f"## {v['name']} — {v['task']}", "", table(TABLE_HEADER, [_row_cells(r) for r in v["rows"]])]
        if v["family"] == "generative" and any(r["ttft_ms"] is not None for r in v["rows"]):
            out += ["", table(["Config", "TTFT (ms)", "decode (tokens/s)"], [[r["label"], r["ttft_ms"], r["decode_tokens_per_s"]] for r in v["rows"]])]
        out += ["", *_protocol_lines(v["rows"])]
        merged = [(m, r["label"]) for r in v["rows"] for m in r["merged"]]
        if merged:
            out += ["", f"Merged grid points ({len(merged)}: built once, reported once, under the row named):", "",
                    table(["Grid point", "Reported as", "Merged at", "Why"], [[m["point"], label, m["level"], m["why"]] for m, label in merged])]
        label = "accuracy" if v["objective"] == "clean_acc" else "fidelity"
        out += ["", f"Pareto frontier per tier ({label} up, latency down, memory down; after the tier's budget). Objective: {v['objective_why']}.", ""]
        for tier, tv in v["tiers"].items():
            memory, latency = TIER_BUDGETS[tier]
            names = ", ".join(p.name for p in tv["frontier"]) or "(no feasible configuration)"
            out.append(f"- **{tier}** (≤ {memory} MB, ≤ {latency:g} ms): {len(tv['feasible'])} of {len(v['points'])} feasible; frontier: {names}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _protocol_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line when every row's robustness was measured alike; otherwise each protocol and its rows."""
    protocols: dict[str, list[str]] = {}
    for r in rows:
        protocols.setdefault(r["robustness_protocol"], []).append(r["label"])
    if list(protocols) == [None]:
        return ["Robustness (RS, mCE, CE): not measured (python -m edgecompile.robustness.sweep <sweep root>, or edgecompile robustness per build)."]
    if len(protocols) == 1:
        return [f"Robustness (RS, mCE, CE): {next(iter(protocols))}, every row. mCE is the seed's mean absolute drop from the row's own clean accuracy; CE is ImageNet-C's Σ_s err / Σ_s err_ref per corruption against the FP32 reference, averaged over corruptions (1.0 = as robust as float)."]
    lines = ["Robustness was NOT measured alike for every row; compare RS/mCE/CE only within one protocol:", ""]
    return lines + [f"- {p or 'not measured'}: {', '.join(labels)}" for p, labels in protocols.items()]


def image_key(view: dict[str, Any], tier: str) -> str:
    return f"pareto {view['slug']} {tier}"


def aggregate_images(rows: list[dict[str, Any]]) -> dict[str, bytes]:
    """Pareto plots (one per group and tier, feasible points only) and robustness heatmaps, by caption."""
    if plots.available() is not None:
        return {}
    images: dict[str, bytes] = {}
    for v in pareto_view(rows):
        axis = "accuracy" if v["objective"] == "clean_acc" else "fidelity (worst output cosine vs reference)"
        for tier, tv in v["tiers"].items():
            memory, latency = TIER_BUDGETS[tier]
            title = f"{v['name']} ({v['task']}) — {tier}: ≤ {memory} MB, ≤ {latency:g} ms; {len(tv['feasible'])} of {len(v['points'])} fit"
            images[image_key(v, tier)] = plots.pareto_png(title, TIER_BUDGETS[tier], tv["feasible"], tv["frontier"], axis)
        for r in v["rows"]:
            rob = r["robustness"]
            if rob and rob.get("artifact"):
                images[f"robustness {v['slug']} {r['label']}"] = plots.robustness_heatmap_png(f"{r['label']}: accuracy under corruption", rob["artifact"]["accuracy"], rob["severities"])
    return images


def sweep_view(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the sweep page shows: a status count, then per group its table, tiers and plots."""
    counts = Counter(r["status"] for r in rows)
    views = pareto_view(rows)
    for v in views:
        v["tier_rows"] = [{"tier": t, "memory_mb": TIER_BUDGETS[t][0], "latency_ms": TIER_BUDGETS[t][1], "feasible": len(tv["feasible"]), "frontier": [p.name for p in tv["frontier"]], "image": image_key(v, t)} for t, tv in v["tiers"].items()]
        v["generative"] = v["family"] == "generative" and any(r["ttft_ms"] is not None for r in v["rows"])
    status = "failed" if counts.get("failed") else "pending" if counts.get("pending") else "passed"
    return {"builds": len(rows), "counts": {s: counts.get(s, 0) for s in ("passed", "failed", "pending")}, "status": status, "groups": views, "header": TABLE_HEADER}
