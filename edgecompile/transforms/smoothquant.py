"""SmoothQuant (Xiao et al., ICML 2023): migrate activation outliers into the weights before W8A8.

Per input channel ``s = max|X|^α / max|W|^(1−α)`` (max|W| over every MatMul of the group), folded
into the preceding LayerNorm: exactly mit-han-lab's ``smooth_ln_fcs`` (smoothquant/smooth.py), on
the ONNX graph instead of torch modules; like ``smooth_lm`` it smooths the LayerNorm → linear
groups (attention q/k/v, MLP fc1) and leaves linears whose input no LayerNorm produces alone.

Two settings, two registry names:

* ``smoothquant``: α searched per group over {0, 0.05, …, 1} plus "no smoothing", minimising the
  group's W8A8 output error on the calibration activations (INT8 per-channel weights, INT8
  per-tensor min/max activations, vs the float output) — the search the seed says CLIP needs;
* ``smoothquant-fixed``: α = 0.5 everywhere (the paper's default, the seed's W8A8-SQ).

Why not onnxruntime's SmoothQuant: ``onnxruntime.quantization.quantize_static`` offers
``extra_options={"SmoothQuant": True}`` only through Intel Neural Compressor's ``ORTSmoothQuant``,
and the current neural-compressor (3.10, the newest on PyPI; its wheel inspected) no longer ships
``neural_compressor.adaptor.ox_utils`` (only torch and TensorFlow smoothers): onnxruntime 1.32's
import of ``neural_compressor.adaptor.ox_utils.smooth_quant`` fails, so the option cannot run. It
also had no per-layer α search (one global α).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

import numpy as np
import onnx

from edgecompile.models.adapter import Feeds
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.base import TransformOutcome
from edgecompile.transforms.scaling import apply_scales, group_stats, fake_quant_int8_weight, find_groups, relative_output_error, weight_arrays

ALPHA_GRID = tuple(round(i * 0.05, 2) for i in range(21))
FIXED_ALPHA = 0.5


def smoothing_scales(act_absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s_c = max|X_c|^α / max_j max_n |W_j[c, n]|^(1−α), clamped like the reference (min 1e-5)."""
    w_max = np.max(np.stack([np.abs(w).max(1) for w in weights]), 0)
    s = np.power(act_absmax.astype(np.float32), alpha) / np.power(np.maximum(w_max, 1e-5), 1.0 - alpha)
    return np.maximum(s, 1e-5).astype(np.float32)


def w8a8_error(x: np.ndarray, weights: list[np.ndarray], s: np.ndarray) -> float:
    return relative_output_error(x, weights, s, lambda w, _j: fake_quant_int8_weight(w), quant_x=True)


def search_alpha(x: np.ndarray, absmax: np.ndarray, weights: list[np.ndarray], grid: tuple[float, ...] = ALPHA_GRID) -> tuple[float | None, dict[str, float]]:
    """(best α or None for "no smoothing", error per candidate) on the group objective."""
    errors = {"none": w8a8_error(x, weights, np.ones(x.shape[1], np.float32))}
    for a in grid:
        errors[f"{a:.2f}"] = w8a8_error(x, weights, smoothing_scales(absmax, weights, a))
    best = min(errors, key=errors.__getitem__)
    return (None if best == "none" else float(best)), errors


class SmoothQuantTransform:
    needs_activations: ClassVar[bool] = True

    def __init__(self, name: str, alpha: float | None) -> None:
        self.name = name
        self.alpha = alpha  # None: searched per group

    def applies_to(self, entries: list[PlanEntry]) -> bool:
        return any(e.precision == "int8" and e.op_type == "MatMul" for e in entries)

    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> TransformOutcome:
        groups = find_groups(model, entries, "int8", layernorm_only=True)
        if not groups:
            return TransformOutcome(model, [])
        stats = group_stats(self.name, model, component, groups, feeds)
        layers = []
        for group in groups:
            st = stats[group.tensor]
            weights = weight_arrays(model, group)
            fixed_s = smoothing_scales(st.absmax, weights, FIXED_ALPHA)
            fixed_err = w8a8_error(st.rows, weights, fixed_s)
            none_err = w8a8_error(st.rows, weights, np.ones_like(fixed_s))
            if self.alpha is None:
                alpha, errors = search_alpha(st.rows, st.absmax, weights)
                err = errors["none" if alpha is None else f"{alpha:.2f}"]
            else:
                alpha = self.alpha
                err = w8a8_error(st.rows, weights, smoothing_scales(st.absmax, weights, alpha))
            where = "unchanged"
            if alpha is not None:
                s = smoothing_scales(st.absmax, weights, alpha)
                where = apply_scales(model, group, s)
            layers.append({
                "transform": self.name, "component": component, "nodes": group.nodes, "input": group.tensor,
                "alpha": alpha, "searched": self.alpha is None, "folded_into": where,
                "objective_w8a8_rel_error": err, "objective_at_fixed_alpha": fixed_err, "objective_unsmoothed": none_err,
            })
        return TransformOutcome(model, layers)


TRANSFORM = SmoothQuantTransform("smoothquant", None)
FIXED = SmoothQuantTransform("smoothquant-fixed", FIXED_ALPHA)
