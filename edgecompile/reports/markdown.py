"""Markdown rendering of one build's report, from the same view data as the HTML page.

For terminals, pull-request comments and diffs; the HTML page (templates/) is the one laid out
for reading.
"""

from __future__ import annotations

from typing import Any

from edgecompile.reports.format import number


def _fmt(value: Any) -> str:
    return number(value).replace("|", "\\|")  # rule patterns such as re:^(a|b)$ must not split the table


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


_MARK = {"passed": "yes", "failed": "**NO**", "pending": "pending (device)"}


def build_markdown(v: dict[str, Any]) -> str:
    """``v``: :func:`edgecompile.reports.view.build_view`'s result."""
    out = [f"# {v['title']}", ""]
    counts = v["gate_counts"]
    out.append(f"**Verdict: {v['verdict'].upper()}** ({counts['passed']} passed, {counts['failed']} failed, {counts['pending']} pending) — target `{v['target']}` (tier {v['tier']}), model `{v['model']}`, {v['where'].get('description', '')}")
    out += ["", "## Gates", "", table(["gate", "metric", "value", "op", "threshold", "status", "reason"], [[g["name"], g["metric"], g["value"], g["op"], g["threshold"], _MARK[g["status"]], g.get("reason", "")] for g in v["gates"]])]
    if v["headline"]:
        out += ["", "## Metrics", "", table(["metric", "value"], [[k, val] for k, val in v["headline"]])]
    if v["components"]:
        rows = [[c["name"], ", ".join(f"{p}×{n}" for p, n in c["precision_mix"].items()) or "n/a", c["size_mb"], c["reference_size_mb"], c["latency_ms"], c["reference_latency_ms"], "; ".join(f"{d['output']} {number(d['cosine_mean'])}" for d in c["drift"]) or "n/a"] for c in v["components"]]
        out += ["", "## Components", "", table(["component", "precision mix", "size (MB)", "reference (MB)", "p90 (ms)", "reference p90 (ms)", "drift (cosine mean)"], rows)]
    if v["generation"]:
        out += ["", "## Generation", "", table(["metric", "artifact", "reference"], [[r["label"], r["value"], r["reference"]] for r in v["generation"]])]
    if v.get("pruning"):
        p = v["pruning"]
        out += ["", f"## Visual-token pruning ({p['method']} schedule)", "", table(["after layer", "keep ratio", "k", "sensitivity"], [[r["layer"], r["keep_ratio"], r["k"], r["sensitivity"]] for r in p["layers"]])]
        if p["metrics"]:
            out += ["", table(["metric", "value"], [[k, val] for k, val in p["metrics"]])]
    if v["comparison"]:
        rows = [[r["output"], r["cosine_min"], r["max_absdiff"], r["mean_absdiff"], r["median_absdiff"], r["median_reldiff"], r["error_stat"], r["atol"], r["rtol"], r["min_cosine"], "yes" if r["passed"] else "**NO**"] for r in v["comparison"]]
        out += ["", "## Per-output comparison (Polygraphy)", "", table(["output", "cosine min", "max abs", "mean abs", "median abs", "median rel", "stat", "atol", "rtol", "min cos", "passed"], rows)]
        out += ["", "Repeat on another machine from the saved reference:", ""] + [f"```\n{line}\n```" for line in v["commands"]]
    if v["layers"]:
        rows = [[i + 1, r["component"], r["module"] or r["node"], r["role"], r["op_type"], r["precision"], r["added"], r.get("added_qdq"), r["accumulated"], r["rule"]] for i, r in enumerate(v["layers"])]
        out += ["", "## Layers adding the most error", "", table(["rank", "component", "module path", "role", "op", "precision", "added", "added (Q/DQ)", "accumulated", "rule"], rows)]
        out += ["", "Suggested recipe rule for the worst offender (by module path, stable across re-exports):", "", f"```yaml\nrules:\n  - {v['layers'][0]['suggested_rule']}\n```"]
    robustness = v["robustness"]
    if robustness:
        for who in ("artifact", "reference"):
            r = robustness.get(who)
            if r:
                out += ["", f"## Robustness ({who})", "", f"clean accuracy {_fmt(r['clean'])}, RS {_fmt(r['rs'])}, mCE {_fmt(r['mce'])}", ""]
                sev = robustness["severities"]
                out.append(table(["corruption", *[f"s{s}" for s in sev]], [[c, *[r["accuracy"][c].get(str(s)) for s in sev]] for c in r["accuracy"]]))
    notes = v["notes"] + [f"plan change: {n}" for n in v["plan_changes"]]
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"
