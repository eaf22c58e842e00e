"""Task metrics shared by training, validation and tests."""

from __future__ import annotations

import re
import string

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def zero_shot_accuracy(image_embeds: np.ndarray, text_embeds: np.ndarray,
                       labels: list[int]) -> float:
    """Top-1 accuracy of argmax cosine similarity between images and class texts."""
    image_embeds = np.asarray(image_embeds, dtype=np.float64)
    text_embeds = np.asarray(text_embeds, dtype=np.float64)
    if image_embeds.ndim != 2 or text_embeds.ndim != 2:
        raise ValueError("image_embeds and text_embeds must be 2-D (count x dim)")
    if image_embeds.shape[0] != len(labels):
        raise ValueError(f"{image_embeds.shape[0]} image embeddings but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no samples to score")
    img = image_embeds / np.maximum(np.linalg.norm(image_embeds, axis=1, keepdims=True), 1e-12)
    txt = text_embeds / np.maximum(np.linalg.norm(text_embeds, axis=1, keepdims=True), 1e-12)
    predictions = np.argmax(img @ txt.T, axis=1)
    return float(np.mean(predictions == np.asarray(labels)))


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and collapse whitespace."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(predictions: list[str], answers: list[str]) -> float:
    """Fraction of predictions equal to the answer after `normalize_answer`."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    if not answers:
        raise ValueError("no answers to score")
    hits = sum(normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers))
    return hits / len(answers)
