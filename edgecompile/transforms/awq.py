"""AWQ (Lin et al., MLSys 2024): activation-aware per-input-channel scales for INT4 weights.

A port of llm-awq's ``auto_scale`` and ``auto_clip`` (awq/quantize/) to ONNX MatMul groups:

* scales: ``s = mean|X|^α``, normalised by ``sqrt(max(s)·min(s))``; α searched per group over
  {0, 0.05, …, 1} (α = 0 is "no scaling") minimising the group's output error with INT4 weights
  (``Q(diag(s) W) / s``, the reference's objective; with static INT8 activations planned, the
  activation quantization of ``X/s`` is part of the objective too). Folded into the preceding
  LayerNorm, else an inserted ``Mul(X, 1/s)`` (the reference's ``ScaledActivation`` after GELU);
* clip (``awq`` only): per output channel and block, the weight range is shrunk by up to 50 % in
  steps of 5 % where that lowers the block's partial-output error on the calibration activations;
  q/k projections are skipped, as in the reference (their error passes through the QKᵀ product).

The transformed float graph feeds the existing INT4 paths unchanged (MatMulNBits on ORT CPU, block
DequantizeLinear on TensorRT/QNN, CoreML weight compression): they round ``diag(s)·W``, clipped,
to nearest, and the clipped range becomes each block's scale.

``awq-fixed`` is the seed's setting: α = 0.5 everywhere, no clip search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

import numpy as np
import onnx

from edgecompile.models.adapter import Feeds
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.base import TransformOutcome
from edgecompile.transforms.scaling import Group, apply_scales, group_stats, fake_quant_int4_weight, find_groups, relative_output_error, set_weight, weight_arrays

ALPHA_GRID = tuple(round(i * 0.05, 2) for i in range(21))
FIXED_ALPHA = 0.5
CLIP_GRID = 20
MAX_SHRINK = 0.5
_NO_CLIP = ("q_proj", "k_proj", "query", "key")


def awq_scales(act_absmean: np.ndarray, alpha: float) -> np.ndarray:
    """llm-awq's candidate: mean|X|^α clamped at 1e-4, divided by sqrt(max·min)."""
    s = np.maximum(np.power(act_absmean.astype(np.float64), alpha), 1e-4)
    return (s / np.sqrt(s.max() * s.min())).astype(np.float32)


def _quantizer(group: Group) -> Callable[[np.ndarray, int], np.ndarray]:
    def quant(w: np.ndarray, j: int) -> np.ndarray:
        e = group.entries[j]
        return fake_quant_int4_weight(w, e.block_size if e.granularity == "per_block" else None, e.symmetric)

    return quant


def group_error(x: np.ndarray, weights: list[np.ndarray], s: np.ndarray, group: Group) -> float:
    static = any(e.activations == "static" for e in group.entries)
    return relative_output_error(x, weights, s, _quantizer(group), quant_x=static)


def search_alpha(x: np.ndarray, absmean: np.ndarray, weights: list[np.ndarray], group: Group, grid: tuple[float, ...] = ALPHA_GRID) -> tuple[float, dict[str, float]]:
    errors = {f"{a:.2f}": group_error(x, weights, awq_scales(absmean, a), group) for a in grid}
    best = min(errors, key=errors.__getitem__)
    return float(best), errors


def clip_search(x: np.ndarray, w: np.ndarray, block: int | None, symmetric: bool, n_grid: int = CLIP_GRID, max_shrink: float = MAX_SHRINK) -> tuple[np.ndarray, float]:
    """llm-awq's auto_clip_layer on a [K, N] weight: best |max| per (block, output channel); returns (clipped W, mean shrink)."""
    k, n = w.shape
    bs = k if block is None else block
    if k % bs:
        return w, 0.0
    xb = x.reshape(x.shape[0], k // bs, bs)  # tokens, blocks, block
    wb = w.reshape(k // bs, bs, n)  # blocks, block, N
    org_out = np.einsum("tgb,gbn->tgn", xb, wb)
    org_max = np.abs(wb).max(1, keepdims=True)  # blocks, 1, N
    best_max = org_max.copy()
    best_err = np.full(org_max.shape, np.inf)
    for i in range(int(max_shrink * n_grid)):
        max_val = org_max * (1 - i / n_grid)
        cur = np.clip(wb, -max_val, max_val).reshape(k, n)
        q = fake_quant_int4_weight(cur, bs, symmetric).reshape(k // bs, bs, n)
        err = ((np.einsum("tgb,gbn->tgn", xb, q) - org_out) ** 2).mean(0)[:, None, :]
        better = err < best_err
        best_err[better] = err[better]
        best_max[better] = max_val[better]
    clipped = np.clip(wb, -best_max, best_max).reshape(k, n)
    return clipped, float(1.0 - np.mean(best_max / np.maximum(org_max, 1e-12)))


class AwqTransform:
    needs_activations: ClassVar[bool] = True

    def __init__(self, name: str, alpha: float | None, clip: bool) -> None:
        self.name = name
        self.alpha = alpha  # None: searched per group
        self.clip = clip

    def applies_to(self, entries: list[PlanEntry]) -> bool:
        return any(e.precision == "int4" for e in entries)

    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> TransformOutcome:
        groups = find_groups(model, entries, "int4")
        if not groups:
            return TransformOutcome(model, [])
        stats = group_stats(self.name, model, component, groups, feeds)
        modules = {e.node: e.module for e in entries}
        layers = []
        for group in groups:
            st = stats[group.tensor]
            weights = weight_arrays(model, group)
            fixed_err = group_error(st.rows, weights, awq_scales(st.absmean, FIXED_ALPHA), group)
            plain_err = group_error(st.rows, weights, np.ones(st.rows.shape[1], np.float32), group)
            if self.alpha is None:
                alpha, errors = search_alpha(st.rows, st.absmean, weights, group)
                err = errors[f"{alpha:.2f}"]
            else:
                alpha = self.alpha
                err = group_error(st.rows, weights, awq_scales(st.absmean, alpha), group)
            s = awq_scales(st.absmean, alpha)
            where = apply_scales(model, group, s) if alpha != 0.0 else "unchanged"
            row = {
                "transform": self.name, "component": component, "nodes": group.nodes, "input": group.tensor,
                "alpha": alpha, "searched": self.alpha is None, "folded_into": where,
                "objective_w4_rel_error": err, "objective_at_fixed_alpha": fixed_err, "objective_unscaled": plain_err,
            }
            if self.clip:
                xs = st.rows / s
                shrink = {}
                for j, (node, wname) in enumerate(zip(group.nodes, group.weights, strict=True)):
                    if any(t in (modules.get(node) or node) for t in _NO_CLIP):
                        continue
                    e = group.entries[j]
                    clipped, mean_shrink = clip_search(xs, weights[j] * s[:, None], e.block_size if e.granularity == "per_block" else None, e.symmetric)
                    set_weight(model, wname, clipped)
                    shrink[node] = round(mean_shrink, 4)
                row["clip_mean_shrink"] = shrink
            layers.append(row)
        return TransformOutcome(model, layers)


TRANSFORM = AwqTransform("awq", None, clip=True)
FIXED = AwqTransform("awq-fixed", FIXED_ALPHA, clip=False)
