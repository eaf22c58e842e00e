"""PNG plots with matplotlib (the ``plots`` extra) for the build and sweep reports.

Every function returns PNG bytes; callers decide where they go (a file, or base64 inside the
self-contained HTML report). Without matplotlib the callers skip plots and say so. Colours come
from one fixed palette per meaning (precision, rule, artifact/reference) so a colour means the
same thing in every figure; nothing is drawn over a bar the legend names.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from typing import Any

from edgecompile.reports.pareto import Point

PRECISION_COLOURS = {"int4": "#d62728", "int8": "#ff7f0e", "fp16": "#2ca02c", "fp32": "#1f77b4", "float": "#1f77b4"}
ARTIFACT, REFERENCE = "#1f77b4", "#b0b0b0"
_RULE_COLOURS = ("#4c72b0", "#8172b3", "#64b5cd", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#55a868", "#c44e52")  # not the precision colours


def available() -> str | None:
    """None when matplotlib imports, else why not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); install the 'plots' extra for figures"
    return None


def _figure(width: float = 6.4, height: float = 4.2, ncols: int = 1):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(width, height), dpi=110)
    return plt, fig, ax


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _short_rule(rule: str) -> str:
    return rule if len(rule) <= 48 else rule[:45] + "..."


def layer_bars_png(rows: list[dict[str, Any]], top: int = 15) -> bytes:
    """Added error per layer (isolated), labelled by module path, coloured by the rule that set its precision.

    The accumulated error (everything quantized up to that layer) is a black tick on the same row,
    not a second bar drawn over the first (which hid the colour the legend named).
    """
    rows = [r for r in rows if r.get("added") is not None][:top][::-1]
    rules_count = len({r["rule"] for r in rows})
    plt, fig, ax = _figure(8.5, 0.34 * max(len(rows), 1) + 1.9 + 0.18 * (rules_count + 1))
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    colour = {rule: _RULE_COLOURS[i % len(_RULE_COLOURS)] for i, rule in enumerate(rules)}
    labels = [f"{r.get('label') or r['component'] + ': ' + r['node']} [{r['precision']}]" for r in rows]
    y = list(range(len(rows)))
    ax.barh(y, [r["added"] for r in rows], color=[colour[r["rule"]] for r in rows])
    acc = [(i, r["accumulated"]) for i, r in enumerate(rows) if r.get("accumulated") is not None]
    if acc:
        ax.scatter([a for _, a in acc], [i for i, _ in acc], marker="|", s=160, color="black", zorder=3, label="accumulated up to this layer")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("relative L2 error of the layer's output vs the float reference")
    for rule in rules:
        ax.barh([0], [0], color=colour[rule], label=f"added, rule: {_short_rule(rule)}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.4, -0.5 / max(len(rows), 1) - 0.08), ncol=1, frameon=False)
    ax.set_title("added error per layer (isolated)", fontsize=10)
    return _png(plt, fig)


def _grouped(ax: Any, names: list[str], artifact: list[float | None], reference: list[float | None], unit: str, title: str) -> None:
    import numpy as np

    x = np.arange(len(names))
    w = 0.38
    ref = [v if v is not None else 0.0 for v in reference]
    art = [v if v is not None else 0.0 for v in artifact]
    ax.bar(x - w / 2, ref, w, color=REFERENCE, label="float reference")
    bars = ax.bar(x + w / 2, art, w, color=ARTIFACT, label="artifact")
    for b, v, r in zip(bars, artifact, reference, strict=True):
        if v is not None and r:
            ax.annotate(f"×{v / r:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    top = max([*art, *ref, 1e-12])
    ax.set_ylim(0, top * 1.18)  # room for the ratio labels under the title
    ax.set_xticks(x, names, fontsize=8, rotation=15)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def latency_size_png(cards: list[dict[str, Any]]) -> bytes:
    """Per component: p90 latency and size, artifact next to the float reference (ratio on top)."""
    plt, fig, (lat, size) = _figure(9.0, 3.4, ncols=2)
    names = [c["name"] for c in cards]
    _grouped(lat, names, [c["latency_ms"] for c in cards], [c["reference_latency_ms"] for c in cards], "p90 latency (ms)", "latency per component")
    _grouped(size, names, [c["size_mb"] for c in cards], [c["reference_size_mb"] for c in cards], "size (MB)", "size per component")
    return _png(plt, fig)


def precision_by_role_png(plan: dict[str, Any]) -> bytes:
    """Weight-carrying nodes per (component, role), stacked by planned precision."""
    counts = Counter((e["component"], e["role"], e["precision"]) for e in plan.get("entries", []) if e.get("weight"))
    groups = list(dict.fromkeys((c, r) for c, r, _ in counts))
    precisions = [p for p in PRECISION_COLOURS if any(k[2] == p for k in counts)] + sorted({k[2] for k in counts} - set(PRECISION_COLOURS))
    plt, fig, ax = _figure(7.0, 0.3 * max(len(groups), 1) + 1.6)
    left = [0] * len(groups)
    for p in precisions:
        values = [counts.get((c, r, p), 0) for c, r in groups]
        ax.barh(range(len(groups)), values, left=left, color=PRECISION_COLOURS.get(p, "#7f7f7f"), label=p)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(groups)), [f"{c}: {r}" for c, r in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("weight-carrying nodes")
    ax.set_title("precision plan by role")
    ax.legend(fontsize=7, title="precision", title_fontsize=7)
    return _png(plt, fig)


def generation_png(rows: list[dict[str, Any]]) -> bytes:
    """Time to first token and decode rate, artifact next to the reference."""
    wanted = {r["metric"].split(".")[1]: r for r in rows}
    plt, fig, axes = _figure(7.0, 3.0, ncols=2)
    for ax, key, unit in zip(axes, ("ttft_ms", "decode_tokens_per_s"), ("time to first token (ms)", "decode (tokens/s)"), strict=True):
        r = wanted.get(key)
        if r is None:
            ax.set_axis_off()
            continue
        _grouped(ax, [key], [r["value"]], [r["reference"]], unit, unit)
    return _png(plt, fig)


IMAGE_TOKENS, TEXT_TOKENS = "#9467bd", "#17becf"  # VLMQ's modalities (not the precision colours)


def vlmq_importance_png(doc: dict[str, Any]) -> bytes:
    """VLMQ's token importance G per decoder layer: image vs text tokens (mean bar, p50–p90 whisker), and the mean-G ratio.

    ``doc`` is the transform's ``vlmq_importance.json``. G's scale grows with depth (the block loss
    accumulates the upstream rounding error), so the left panel is log-scaled and the right one
    shows the scale-free ratio, with 1 (no modality preference) marked.
    """
    rows = [r for r in doc.get("layers", []) if (r.get("image") or {}).get("mean") is not None and (r.get("text") or {}).get("mean") is not None]
    plt, fig, (g_ax, r_ax) = _figure(9.0, 3.4, ncols=2)
    layers = [r["layer"] for r in rows]
    for offset, key, colour in ((-0.2, "image", IMAGE_TOKENS), (0.2, "text", TEXT_TOKENS)):
        xs = [x + offset for x in range(len(rows))]
        means = [r[key]["mean"] for r in rows]
        g_ax.bar(xs, means, width=0.4, color=colour, label=f"{key} tokens")
        g_ax.vlines(xs, [r[key]["p50"] for r in rows], [r[key]["p90"] for r in rows], colors="black", linewidth=1)
    g_ax.set_xticks(range(len(rows)), [str(x) for x in layers], fontsize=7)
    if rows and all(r[k]["mean"] > 0 for r in rows for k in ("image", "text")):
        g_ax.set_yscale("log")
    g_ax.set_xlabel("decoder layer")
    g_ax.set_ylabel("G (mean; whisker p50–p90)")
    g_ax.set_title(f"token importance G ({doc.get('settings', {}).get('norm', 'l1')})")
    g_ax.legend(fontsize=7)
    ratios = [r["ratio"] if r.get("ratio") is not None else float("nan") for r in rows]
    r_ax.plot(range(len(rows)), ratios, marker="o", color=IMAGE_TOKENS)
    r_ax.axhline(1.0, color=REFERENCE, linestyle="--", linewidth=1)
    r_ax.set_xticks(range(len(rows)), [str(x) for x in layers], fontsize=7)
    r_ax.set_xlabel("decoder layer")
    r_ax.set_ylabel("mean G image / mean G text")
    overall = doc.get("ratio_image_text", doc.get("ratio"))  # the JSON document, or view.vlmq_view's rows
    r_ax.set_title("modality ratio" + (f" (mean {overall:.3g})" if overall is not None else ""))
    return _png(plt, fig)


def keep_schedule_png(view: dict[str, Any]) -> bytes:
    """The token-pruning schedule: cumulative keep ratio after each prune layer (steps), and the sensitivity it came from.

    ``view`` is ``reports.view.pruning_view``'s section. Sensitivity is drawn only for QUOTA schedules
    (the uniform and explicit ones have none): the layers the low-bit decoder is most sensitive at
    drop the fewest tokens.
    """
    rows = view["layers"]
    plt, fig, (k_ax, s_ax) = _figure(9.0, 3.2, ncols=2)
    layers = [r["layer"] for r in rows]
    k_ax.step([layers[0] - 1, *layers], [1.0, *(r["keep_ratio"] for r in rows)], where="post", color=IMAGE_TOKENS, marker="o")
    for r in rows:
        if r["k"] is not None:
            k_ax.annotate(f"k={r['k']}", (r["layer"], r["keep_ratio"]), textcoords="offset points", xytext=(3, 4), fontsize=7)
    k_ax.set_ylim(0, 1.05)
    k_ax.set_xlabel("after decoder layer")
    k_ax.set_ylabel("visual tokens kept (cumulative)")
    k_ax.set_title(f"keep schedule ({view['method']}, {view.get('image_tokens') or '?'} image tokens)")
    sens = [r["sensitivity"] for r in rows]
    if all(v is not None for v in sens):
        s_ax.bar(range(len(rows)), sens, color=TEXT_TOKENS)
        s_ax.set_xticks(range(len(rows)), [str(x) for x in layers], fontsize=7)
        s_ax.set_xlabel("decoder layer")
        s_ax.set_ylabel("low-bit sensitivity s_l")
        s_ax.set_title("sensitivity (float vs low-bit deviation)")
    else:
        s_ax.axis("off")
        s_ax.text(0.5, 0.5, "no sensitivity: uniform or explicit schedule", ha="center", va="center", fontsize=8)
    return _png(plt, fig)


def _axis_range(values: list[float], budget: float | None, log: bool) -> tuple[float, float]:
    """Fit the data (and the budget line when it is near the data), with a margin."""
    lo, hi = min(values), max(values)
    if budget is not None and budget <= hi * 3:
        hi = max(hi, budget)
    if log:
        return lo / 1.6, hi * 1.6
    pad = (hi - lo) * 0.12 or abs(hi) * 0.05 or 0.05
    return lo - pad, hi + pad


def _place_labels(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Annotate points with offsets chosen so that no two labels overlap (greedy, in display space)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    offsets = [(6, 6), (6, -12), (-6, 6), (-6, -12), (8, 16), (8, -22), (-8, 16), (-8, -22), (12, 28), (12, -34)]
    for x, y, text in points:
        best = None
        for dx, dy in offsets:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, ha="left" if dx > 0 else "right", arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5})
            box = ann.get_window_extent(renderer).expanded(1.05, 1.15)
            if not any(box.overlaps(b) for b in placed):
                best = (ann, box)
                break
            ann.remove()
        if best is None:  # every slot taken: keep the last one, smaller
            ann = ax.annotate(text, (x, y), xytext=offsets[-1], textcoords="offset points", fontsize=6, arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5})
            best = (ann, ann.get_window_extent(renderer))
        placed.append(best[1])


def pareto_png(title: str, budget: tuple[float, float], points: list[Point], front: list[Point], objective: str) -> bytes:
    """One tier: only the points that fit its budget, the frontier, the latency budget as a line when in range.

    The latency axis is logarithmic when the data span more than a decade, else fitted to the data.
    """
    plt, fig, ax = _figure(7.0, 4.6)
    done = [p for p in points if p.accuracy is not None and p.latency_ms is not None]
    if not done:
        ax.text(0.5, 0.5, "no configuration fits this tier's budget", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(title)
        return _png(plt, fig)
    xs = [float(p.latency_ms) for p in done]  # type: ignore[arg-type]
    ys = [float(p.accuracy) for p in done]  # type: ignore[arg-type]
    log = min(xs) > 0 and max(xs) / min(xs) > 10
    sizes = [30.0 + 120.0 * math.sqrt((p.memory_mb or 0.0) / max(max((q.memory_mb or 0.0) for q in done), 1e-9)) for p in done]
    on_front = {p.name for p in front}
    for wanted, colour, label in ((True, ARTIFACT, "on the Pareto frontier"), (False, REFERENCE, "dominated")):
        idx = [i for i, p in enumerate(done) if (p.name in on_front) == wanted]
        if idx:
            ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=[sizes[i] for i in idx], c=colour, alpha=0.8, edgecolors="black", linewidths=0.4, label=f"{label} (area ~ peak memory)")
    if front:
        ax.plot([p.latency_ms for p in front], [p.accuracy for p in front], "-", color=ARTIFACT, lw=1.2)
    if log:
        ax.set_xscale("log")
    ax.set_xlim(*_axis_range(xs, budget[1], log))
    bottom, top = _axis_range(ys, None, False)
    if max(ys) <= 1.0:  # accuracy and cosine stop at 1
        top = min(top, 1.0 + 0.04 * (top - bottom))
    ax.set_ylim(bottom, top)
    if budget[1] <= ax.get_xlim()[1]:
        ax.axvline(budget[1], color="#d62728", ls="--", lw=1, label=f"latency budget {budget[1]:g} ms")
    else:
        ax.text(0.99, 0.02, f"latency budget {budget[1]:g} ms (off the right edge)", ha="right", va="bottom", fontsize=7, color="#d62728", transform=ax.transAxes)
    ax.set_xlabel("latency p90 (ms)" + (", log scale" if log else ""))
    ax.set_ylabel(objective)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    _place_labels(ax, sorted(zip(xs, ys, [p.name for p in done], strict=True)))
    return _png(plt, fig)


def robustness_heatmap_png(title: str, accuracy: dict[str, dict[str, float]], severities: list[int]) -> bytes:
    import numpy as np

    names = list(accuracy)
    grid = np.array([[accuracy[c].get(str(s), np.nan) for s in severities] for c in names], dtype=float)
    plt, fig, ax = _figure(5.5, 0.35 * len(names) + 1.5)
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("severity")
    ax.set_title(title)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if grid[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="accuracy")
    return _png(plt, fig)
