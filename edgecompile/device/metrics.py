"""Metrics the device computes from its own outputs, named as the host names them.

Accuracy for zero-shot classification follows edgecompile.models.dual_encoder (unit-norm image
embeddings against class embeddings, CLIP's template averaging); token agreement follows
GenerativeAdapter.compare_outputs; drift is edgecompile.validation.drift itself. Those host modules
import torch, so the few lines they share are repeated here, and a test holds both to the same
numbers on the same build.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecompile.validation.drift import drift


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def zero_shot_accuracy(images: np.ndarray, texts: np.ndarray, labels: np.ndarray, per_class: int) -> float:
    classes = _unit(texts) if per_class == 1 else _unit(_unit(texts).reshape(-1, per_class, texts.shape[-1]).mean(axis=1))
    predicted = (_unit(images) @ classes.T).argmax(axis=1)
    return float((predicted == labels).mean())


def token_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Positional agreement of greedy tokens (-1 pads) with the reference's."""
    valid = reference >= 0
    same = (reference == candidate) & valid
    prefix = [int(np.argmin(np.append(row, False))) for row in same | ~valid]
    return {
        "generation.token_agreement": float(same.sum() / max(valid.sum(), 1)),
        "generation.sequence_match": float(np.mean([bool(np.all(s[v])) for s, v in zip(same, valid, strict=True)])),
        "generation.first_token_agreement": float(np.mean(same[:, 0])),
        "generation.agreeing_prefix_mean": float(np.mean(prefix)),
    }


def drift_metrics(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, Any]:
    """``drift.<component>.<output>.<stat>`` for every float output both sides have."""
    out: dict[str, Any] = {}
    for key, ref in reference.items():
        if ref.dtype.kind != "f" or key not in candidate:
            continue
        for name, value in drift(ref, candidate[key]).items():
            out[f"drift.{key.replace('/', '.')}.{name}"] = value
    return out
