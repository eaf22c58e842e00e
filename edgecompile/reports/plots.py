"""PNG plots with matplotlib (the ``plots`` extra): Pareto scatter per tier, robustness heatmap,
per-layer error bars. Every function returns PNG bytes; callers decide where they go (a file, or
base64 inside the HTML report). Without matplotlib the callers skip plots and say so.
"""

from __future__ import annotations

import io
from typing import Any

from edgecompile.reports.pareto import Point


def available() -> str | None:
    """None when matplotlib imports, else why not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); install the 'plots' extra for figures"
    return None


def _figure(width: float = 6.4, height: float = 4.2):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    return plt, fig, ax


def _png(plt: Any, fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pareto_png(tier: str, budget: tuple[float, float], points: list[Point], front: list[Point], objective: str) -> bytes:
    plt, fig, ax = _figure()
    done = [p for p in points if p.accuracy is not None and p.latency_ms is not None]
    ax.scatter([p.latency_ms for p in done], [p.accuracy for p in done], s=[max(20.0, (p.memory_mb or 0) / 4) for p in done], alpha=0.5, label="configs (size ~ memory)")
    for p in done:
        ax.annotate(p.name, (p.latency_ms, p.accuracy), fontsize=7)
    if front:
        ax.plot([p.latency_ms for p in front], [p.accuracy for p in front], "r-o", label="Pareto frontier (feasible)")
    ax.axvline(budget[1], color="gray", ls="--", label=f"latency budget {budget[1]:g} ms")
    ax.set_xlabel("latency p90 (ms)")
    ax.set_ylabel(objective)
    ax.set_title(f"{tier}: memory budget {budget[0]:g} MB")
    ax.legend(fontsize=7)
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
            ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, label="accuracy")
    return _png(plt, fig)


def layer_bars_png(layers: list[dict[str, Any]], top: int = 15) -> bytes:
    rows = [r for r in layers if r.get("added") is not None][:top]
    plt, fig, ax = _figure(6.4, 0.3 * max(len(rows), 1) + 1.5)
    labels = [f"{r['component']}/{r['node']} ({r['precision']})" for r in rows][::-1]
    ax.barh(labels, [r["added"] for r in rows][::-1], label="added (isolated)")
    ax.barh(labels, [r.get("accumulated") or 0.0 for r in rows][::-1], alpha=0.4, label="accumulated")
    ax.set_xlabel("relative L2 error")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title("layers adding the most error")
    return _png(plt, fig)
