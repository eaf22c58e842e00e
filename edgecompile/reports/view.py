"""What one build's report shows, as plain data: the template renders it, the Markdown writer reads it.

Joins the files a build writes (validate/report.json, comparison.json, layers.json,
annotate/plan.json, robustness/robustness.json) into one dict: the verdict, the gates, a card per
component (precision mix, size, latency, drift against the reference), generation metrics for
generative models, and the layers adding the most error named by their module path (plan.json
knows it) with a suggested rule written against that path, never the exporter's node name
(``node_MatMul_258`` changes on every re-export; ``text_model.encoder.layers.2.mlp.fc2`` does not).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from edgecompile.reports.format import status_of, verdict_status

_GENERATION = ("ttft_ms", "decode_tokens_per_s", "first_token_agreement", "token_agreement", "sequence_match", "agreeing_prefix_mean")
_GENERATION_LABELS = {
    "ttft_ms": "time to first token (ms)",
    "decode_tokens_per_s": "decode (tokens/s)",
    "first_token_agreement": "first-token agreement",
    "token_agreement": "token agreement",
    "sequence_match": "sequence match",
    "agreeing_prefix_mean": "agreeing prefix (tokens)",
}


def plan_index(plan: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, Any]]:
    """(component, node) -> plan entry."""
    return {(e["component"], e["node"]): e for e in (plan or {}).get("entries", [])}


def layer_rows(layers: list[dict[str, Any]] | None, plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Layer attribution rows with module path and role from the plan, and a rule against the module path."""
    index = plan_index(plan)
    rows = []
    for r in layers or []:
        entry = index.get((r["component"], r["node"]), {})
        module, role = entry.get("module") or "", entry.get("role") or ""
        rows.append({**r, "module": module, "role": role, "label": f"{r['component']}: {module or r['node']}", "suggested_rule": suggest_rule(r, module, role)})
    return rows


def suggest_rule(row: dict[str, Any], module: str, role: str) -> str:
    """A recipe rule that keeps this layer out of its precision, matched by module path (or, lacking one, role)."""
    found = re.search(r"precision:\s*([A-Za-z0-9_]+)", row.get("suggestion") or "")  # validation's choice of target precision
    precision = found.group(1) if found else "null"
    where = f"name: {module}" if module else f"role: {role}" if role else f"op_type: {row.get('op_type')}"
    return f"{{match: {{component: {row['component']}, {where}}}, precision: {precision}, why: \"adds the most error at {row['precision']}\"}}"


def _components(report: dict[str, Any], plan: dict[str, Any] | None) -> list[str]:
    names = list(report.get("artifacts") or {})
    for key in report.get("metrics", {}):
        m = re.match(r"latency\.([A-Za-z0-9_]+)\.p90_ms$", key)
        if m and m.group(1) != "reference" and m.group(1) not in names:
            names.append(m.group(1))
    for e in (plan or {}).get("entries", []):
        if e["component"] not in names:
            names.append(e["component"])
    return names


def component_cards(report: dict[str, Any], plan: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per component: precision mix of weight-carrying nodes, size, latency and drift vs the reference."""
    m = report.get("metrics", {})
    exported = ((report.get("stages") or {}).get("export") or {}).get("summary", {}).get("components", {})
    cards = []
    for c in _components(report, plan):
        mix = Counter(e["precision"] for e in (plan or {}).get("entries", []) if e["component"] == c and e.get("weight"))
        ref_bytes = (exported.get(c) or {}).get("bytes")
        drift = {k.split(".")[2]: v for k, v in m.items() if k.startswith(f"drift.{c}.") and k.endswith(".cosine_mean")}
        drift_min = {k.split(".")[2]: v for k, v in m.items() if k.startswith(f"drift.{c}.") and k.endswith(".cosine_min")}
        cards.append(
            {
                "name": c,
                "precision_mix": dict(sorted(mix.items())),
                "size_mb": m.get(f"size.{c}_mb"),
                "reference_size_mb": ref_bytes / 2**20 if ref_bytes else None,
                "latency_ms": m.get(f"latency.{c}.p90_ms"),
                "reference_latency_ms": m.get(f"latency.reference.{c}.p90_ms"),
                "speedup": m.get(f"latency.{c}.speedup_vs_reference"),
                "drift": [{"output": o, "cosine_mean": v, "cosine_min": drift_min.get(o)} for o, v in drift.items()],
            }
        )
    return cards


def generation_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Generation metrics (artifact and reference side by side) for generative builds; empty otherwise."""
    rows = []
    for key in _GENERATION:
        value = metrics.get(f"generation.{key}")
        if value is None:
            continue
        rows.append({"metric": f"generation.{key}", "label": _GENERATION_LABELS[key], "value": value, "reference": metrics.get(f"generation.{key}.reference")})
    return rows


def comparison_rows(comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for c, outs in ((comparison or {}).get("components") or {}).items():
        for n, r in outs.items():
            rows.append({"output": f"{c}/{n}", **r, "passed": bool(r.get("simple_passed") and r.get("cosine_passed"))})
    return rows


def headline_metrics(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    keys = ["accuracy", "accuracy.reference", "accuracy.drop", "accuracy.chance", "accuracy.top5", "size.reference_mb", "size.artifact_mb", "size.compression_ratio", "latency.p90_ms", "memory.peak_mb", "layers.max_added_error"]
    return [(k, metrics[k]) for k in keys if k in metrics]


def vlmq_view(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The VLMQ section (``transform/vlmq_importance.json``): settings, the overall ratio, one row per layer."""
    if not doc:
        return None
    empty = {"mean": None, "p50": None, "p90": None, "tokens": 0}
    rows = [{"layer": r["layer"], "image": r.get("image") or empty, "text": r.get("text") or empty, "ratio": r.get("ratio"), "block_loss_mean": r.get("block_loss_mean")} for r in doc.get("layers", [])]
    return {"settings": doc.get("settings", {}), "ratio": doc.get("ratio_image_text"), "samples": doc.get("samples"), "image_tokens": doc.get("image_tokens_per_sample"),
            "text_tokens": doc.get("text_tokens_per_sample"), "layers": rows, "fallbacks": doc.get("fallbacks", [])}


PRUNING_METRICS = ("accuracy.retention", "token_pruning.kept_visual_fraction", "token_pruning.prefill_ms", "token_pruning.unpruned_prefill_ms",
                   "token_pruning.prefill_latency_ratio", "token_pruning.kv_cache_bytes", "token_pruning.kv_cache_ratio", "token_pruning.flops_ratio")


def pruning_view(doc: dict[str, Any] | None, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The token-pruning section (``calibrate/token_pruning.json`` + validate's token_pruning.* rows): one row per prune step."""
    if not doc:
        return None
    n = doc.get("reference_visual_tokens")
    ratios, sensitivity = doc.get("keep_ratios", []), doc.get("sensitivity") or []
    import math

    rows = [{"layer": layer, "keep_ratio": r, "k": (min(max(math.ceil(round(r * n, 9)), 1), n) if n else None), "sensitivity": sensitivity[i] if i < len(sensitivity) else None}
            for i, (layer, r) in enumerate(zip(doc.get("layers", []), ratios, strict=False))]
    inputs = doc.get("inputs", {})
    return {"method": inputs.get("method", "explicit"), "final_keep": inputs.get("final_keep"), "temperature": inputs.get("temperature"), "floor": inputs.get("floor"),
            "weights": inputs.get("weights"), "image_tokens": n, "layers": rows, "metrics": [(k, metrics[k]) for k in PRUNING_METRICS if k in metrics]}


def build_view(report: dict[str, Any], comparison: dict[str, Any] | None = None, layers: list[dict[str, Any]] | None = None, plan: dict[str, Any] | None = None, robustness: dict[str, Any] | None = None, vlmq: dict[str, Any] | None = None, pruning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the build report shows (values raw; templates format them with ``number``)."""
    metrics = report.get("metrics", {})
    gates = [{**g, "status": status_of(g)} for g in report.get("gates", [])]
    counts = Counter(g["status"] for g in gates)
    stages = [{"stage": s, "wall_s": v.get("wall_s"), "peak_rss_mb": v.get("peak_rss_mb")} for s, v in (report.get("stages") or {}).items()]
    return {
        "title": f"edgecompile report: {report.get('recipe')}",
        "recipe": report.get("recipe"),
        "target": report.get("target"),
        "tier": report.get("tier"),
        "model": report.get("model"),
        "where": report.get("where") or {},
        "verdict": verdict_status(report.get("verdict")),
        "gate_counts": {s: counts.get(s, 0) for s in ("passed", "failed", "pending")},
        "gates": gates,
        "headline": headline_metrics(metrics),
        "components": component_cards(report, plan),
        "generation": generation_rows(metrics),
        "comparison": comparison_rows(comparison),
        "commands": list(((comparison or {}).get("commands") or {}).values()),
        "layers": layer_rows(layers, plan)[:10],
        "robustness": robustness,
        "vlmq": vlmq_view(vlmq),
        "pruning": pruning_view(pruning, metrics),
        "stages": stages,
        "notes": report.get("notes") or [],
        "plan_changes": ((report.get("stages") or {}).get("build") or {}).get("summary", {}).get("plan_changes") or [],
    }


__all__ = ["build_view", "layer_rows", "plan_index", "pruning_view", "suggest_rule", "vlmq_view"]
