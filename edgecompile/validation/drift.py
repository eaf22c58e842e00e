"""Output drift between reference and candidate: cosine per row and absolute errors."""

from __future__ import annotations

import numpy as np


def drift(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Cosine (mean and worst over rows) and max/mean absolute error of ``candidate`` vs ``reference``."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    cand = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cos = (ref * cand).sum(axis=1) / np.maximum(norms, 1e-30)
    err = np.abs(ref - cand)
    scale = np.abs(ref).max()
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "max_rel_error": float(err.max() / max(scale, 1e-30)),
    }
