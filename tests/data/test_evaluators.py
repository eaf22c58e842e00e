"""Metric functions score known cases exactly."""

import numpy as np
import pytest

from edgecompile.data.evaluators import exact_match, normalize_answer, zero_shot_accuracy


def test_zero_shot_accuracy_uses_cosine_not_dot():
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    # Scaling a class's text embedding must not change the prediction (cosine, not dot).
    images = np.array([[10.0, 1.0], [0.1, 0.2], [3.0, 2.9]])
    assert zero_shot_accuracy(images, text, [0, 1, 0]) == pytest.approx(1.0)
    assert zero_shot_accuracy(images, text * np.array([[1.0], [100.0]]), [0, 1, 0]) == 1.0
    assert zero_shot_accuracy(images, text, [1, 1, 1]) == pytest.approx(1 / 3)


def test_zero_shot_accuracy_rejects_mismatch():
    with pytest.raises(ValueError, match="labels"):
        zero_shot_accuracy(np.ones((2, 3)), np.ones((4, 3)), [0])


def test_exact_match_normalises():
    assert normalize_answer(" Red!  ") == "red"
    assert exact_match(["Red.", "blue", "two"], ["red", "Blue", "three"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])
