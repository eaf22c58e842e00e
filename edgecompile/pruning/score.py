"""Composite visual-token score and top-k selection: the numpy reference (seed 003, sec. 3.3).

The compiled ONNX scoring subgraph is tested against this module, so every step is pinned down
here rather than left to numpy defaults a reader has to guess. The seed's equations (6)-(9) are
partly lost in its text; what follows is the reading implemented, stated once:

* ``attn`` is one layer's post-softmax attention ``[heads, S, T]`` (queries x keys, ``T >= S``); the
  last ``S`` key columns are the current tokens, earlier columns are cached past keys.
* inter-modal(j) = mean over heads and text queries of ``attn[h, i, j]``. Text queries are the
  non-visual tokens after the first visual token (the prompt that reads the image); when there are
  none, all non-visual tokens; when there are no non-visual tokens at all, the metric is zero.
* intra-visual(j) = mean over heads and all visual queries (``i == j`` included) of ``attn[h, i, j]``.
* magnitude(j) = ``||hidden_j||_2``; residual(j) = ``||hidden_j - Q(hidden_j)||_2`` with Q symmetric
  per-token fake quantization (see :func:`fake_quantize_per_token`).
* each metric is normalized by :func:`robust_normalize` over the visual tokens (eq. 7), and the
  composite is the weighted sum with layer-shared weights (eq. 8).

Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

METRICS = ("inter_modal", "intra_visual", "magnitude", "residual")
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "inter_modal": 0.45,
    "magnitude": 0.25,
    "intra_visual": 0.10,
    "residual": 0.20,
}


def robust_normalize(values: np.ndarray) -> np.ndarray:
    """Clip to [p10, p90] and rescale by (p90 - p10) to [0, 1] (seed eqs. 2 and 7).

    Percentiles are ``np.percentile`` with its default ``method="linear"``: for n sorted values
    v_0..v_{n-1}, the q-th percentile sits at position r = q/100 * (n - 1) and is
    ``v_floor(r) + (r - floor(r)) * (v_floor(r)+1 - v_floor(r))``. The ONNX side must reproduce that
    interpolation. When p90 == p10 (a constant metric, or one that is constant after clipping) every
    value maps to 0: there is nothing to rank, and a division by zero would give NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return v
    p10, p90 = np.percentile(v, [10.0, 90.0])
    span = p90 - p10
    if not span > 0:
        return np.zeros_like(v)
    return (np.clip(v, p10, p90) - p10) / span


def fake_quantize_per_token(x: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-row fake quantization: the deployed activation quantizer Q in eq. (6).

    scale = max|x| / (2^(b-1) - 1) per row; q = clip(round(x / scale), -(2^(b-1) - 1), 2^(b-1) - 1)
    with ``np.round`` (round half to even, like ONNX ``Round``); a zero row stays zero. The range is
    symmetric (no -2^(b-1) code) because the max-abs scale never reaches it.
    """
    if bits < 2:
        raise ValueError(f"residual_bits: expected an integer >= 2, got {bits}")
    qmax = float(2 ** (bits - 1) - 1)
    x = np.asarray(x, dtype=np.float64)
    amax = np.max(np.abs(x), axis=-1, keepdims=True)
    scale = amax / qmax
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(x / safe), -qmax, qmax) * safe
    return np.where(scale > 0, q, 0.0)


def _text_queries(visual: np.ndarray) -> np.ndarray:
    """Boolean mask of the text queries whose attention to visual keys counts as inter-modal."""
    text = ~visual
    if not visual.any():
        return text
    after = text & (np.arange(visual.size) > np.flatnonzero(visual)[0])
    return after if after.any() else text


def _check_inputs(attn: np.ndarray, hidden: np.ndarray, visual: np.ndarray) -> None:
    """Refuse shapes that would silently broadcast into a wrong score."""
    if attn.ndim != 3:
        raise ValueError(f"attn: expected [heads, S, T], got shape {attn.shape}")
    _, s, t = attn.shape
    if t < s:
        raise ValueError(f"attn: expected T >= S (keys include the current tokens), got shape {attn.shape}")
    if hidden.ndim != 2 or hidden.shape[0] != s:
        raise ValueError(f"hidden: expected [S={s}, D], got shape {hidden.shape}")
    if visual.shape != (s,):
        raise ValueError(f"visual: expected a bool mask of shape ({s},), got shape {visual.shape}")


def token_metrics(attn: np.ndarray, hidden: np.ndarray, visual: np.ndarray, residual_bits: int = 4) -> dict[str, np.ndarray]:
    """The four raw (unnormalized) metrics of eq. (6), one value per visual token, in sequence order."""
    attn = np.asarray(attn, dtype=np.float64)
    hidden = np.asarray(hidden, dtype=np.float64)
    visual = np.asarray(visual, dtype=bool)
    _check_inputs(attn, hidden, visual)
    s, t = attn.shape[1], attn.shape[2]
    cols = (t - s) + np.flatnonzero(visual)
    to_visual = attn[:, :, cols].mean(axis=0)  # [S, Nv], averaged over heads
    text = _text_queries(visual)
    inter = to_visual[text].mean(axis=0) if text.any() else np.zeros(cols.size)
    intra = to_visual[visual].mean(axis=0) if visual.any() else np.zeros(0)
    hv = hidden[visual]
    return {
        "inter_modal": inter,
        "intra_visual": intra,
        "magnitude": np.linalg.norm(hv, axis=-1),
        "residual": np.linalg.norm(hv - fake_quantize_per_token(hv, residual_bits), axis=-1),
    }


def resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults when ``None``; otherwise exactly the four metric names, each a finite number."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    unknown = sorted(set(weights) - set(METRICS))
    missing = sorted(set(METRICS) - set(weights))
    if unknown or missing:
        raise ValueError(f"weights: expected keys {', '.join(METRICS)}; unknown {unknown}, missing {missing}")
    out = {}
    for name in METRICS:
        w = weights[name]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w):
            raise ValueError(f"weights.{name}: expected a finite number, got {w!r}")
        out[name] = float(w)
    return out


def composite_scores(
    attn: np.ndarray,
    hidden: np.ndarray,
    visual: np.ndarray,
    weights: Mapping[str, float] | None = None,
    residual_bits: int = 4,
) -> np.ndarray:
    """Composite importance of each visual token (eq. 8), in sequence order of the visual tokens."""
    w = resolve_weights(weights)
    metrics = token_metrics(attn, hidden, visual, residual_bits)
    total = np.zeros(metrics["magnitude"].shape, dtype=np.float64)
    for name in METRICS:
        total += w[name] * robust_normalize(metrics[name])
    return total


def select_tokens(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the top-k scores (eq. 9), ascending; ties go to the lower index.

    The stable sort on ``-scores`` is what makes the tie-break deterministic; the result is returned
    in original order so the kept tokens keep their relative positions.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if np.isnan(scores).any():
        raise ValueError("scores: contains NaN; the ranking would be undefined")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= scores.size:
        raise ValueError(f"k: expected an integer in [0, {scores.size}], got {k!r}")
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:k])


def kept_positions(visual_mask: np.ndarray, kept_visual_idx: np.ndarray) -> np.ndarray:
    """Sequence positions that survive: every non-visual token plus the kept visual ones, ascending.

    ``kept_visual_idx`` indexes the visual tokens (0 = first visual token), as returned by
    :func:`select_tokens`.
    """
    mask = np.asarray(visual_mask, dtype=bool).ravel()
    idx = np.asarray(kept_visual_idx, dtype=np.int64).ravel()
    visual_pos = np.flatnonzero(mask)
    if idx.size and (idx.min() < 0 or idx.max() >= visual_pos.size):
        raise ValueError(f"kept_visual_idx: expected indices in [0, {visual_pos.size}), got {idx.tolist()}")
    if np.unique(idx).size != idx.size:
        raise ValueError("kept_visual_idx: contains duplicates")
    return np.sort(np.concatenate([np.flatnonzero(~mask), visual_pos[idx]]))
