"""Markdown rendering of one build's report (gates, key metrics, comparison, top layers, robustness)."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")  # rule patterns such as re:^(a|b)$ must not split the table


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def build_markdown(report: dict[str, Any], comparison: dict[str, Any] | None = None, layers: list[dict[str, Any]] | None = None, robustness: dict[str, Any] | None = None) -> str:
    m = report.get("metrics", {})
    out = [f"# edgecompile report: {report.get('recipe')}", ""]
    out.append(f"**Verdict: {str(report.get('verdict', '?')).upper()}** — target `{report.get('target')}` (tier {report.get('tier')}), model `{report.get('model')}`, {report.get('where', {}).get('description', '')}")
    out += ["", "## Gates", "", table(["gate", "metric", "value", "op", "threshold", "status", "reason"], [[g["name"], g["metric"], g["value"], g["op"], g["threshold"], {"passed": "yes", "failed": "**NO**", "pending": "pending (device)"}[g.get("status") or ("passed" if g["passed"] else "failed")], g.get("reason", "")] for g in report.get("gates", [])])]
    keys = [k for k in ("accuracy", "accuracy.reference", "accuracy.drop", "size.reference_mb", "size.artifact_mb", "size.compression_ratio", "latency.p90_ms", "memory.peak_mb", "layers.max_added_error") if k in m]
    keys += sorted(k for k in m if k.startswith("drift.") and k.endswith("cosine_mean"))
    out += ["", "## Metrics", "", table(["metric", "value"], [[k, m[k]] for k in keys])]
    if comparison and comparison.get("components"):
        rows = [[f"{c}/{n}", r["cosine_min"], r["max_absdiff"], r["mean_absdiff"], r["median_absdiff"], r["median_reldiff"], r["error_stat"], r["atol"], r["rtol"], r["min_cosine"], "yes" if r["simple_passed"] and r["cosine_passed"] else "**NO**"] for c, outs in comparison["components"].items() for n, r in outs.items()]
        out += ["", "## Per-output comparison (Polygraphy)", "", table(["output", "cosine min", "max abs", "mean abs", "median abs", "median rel", "stat", "atol", "rtol", "min cos", "passed"], rows)]
        out += ["", "Repeat on another machine from the saved reference:", ""] + [f"```\n{line}\n```" for line in comparison.get("commands", {}).values()]
    if layers:
        rows = [[i + 1, f"{r['component']}/{r['node']}", r["op_type"], r["precision"], r["added"], r.get("added_qdq"), r["accumulated"], r["rule"]] for i, r in enumerate(layers[:10])]
        out += ["", "## Layers adding the most error", "", table(["rank", "node", "op", "precision", "added", "added (Q/DQ)", "accumulated", "rule"], rows)]
        out += ["", "Suggested recipe rule for the worst offender:", "", f"```yaml\nrules:\n  - {layers[0]['suggestion']}\n```"]
    if robustness:
        for who in ("artifact", "reference"):
            r = robustness.get(who)
            if r:
                out += ["", f"## Robustness ({who})", "", f"clean accuracy {_fmt(r['clean'])}, RS {_fmt(r['rs'])}, mCE {_fmt(r['mce'])}", ""]
                sev = robustness["severities"]
                out.append(table(["corruption", *[f"s{s}" for s in sev]], [[c, *[r["accuracy"][c].get(str(s)) for s in sev]] for c in r["accuracy"]]))
    if report.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"
