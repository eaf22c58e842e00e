"""Guards against verdicts that compare nothing with nothing.

A gate on ``accuracy.drop`` between an artifact and its float reference means something only if
the reference itself solves the eval set. A random-weight checkpoint, a model evaluated on data
from another task, or a broken preprocessing scores at chance, and then reference and artifact
agree perfectly on noise. Here chance is the better of a uniform guess and always answering the
most frequent label or answer; the reference must clear it by a tenth of the remaining headroom
(and the recipe's ``eval.min_reference_accuracy``, when set) for accuracy gates to count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

HEADROOM_FRACTION = 0.1


def chance_accuracy(eval_data: Any) -> float | None:
    """Accuracy of the best blind guess on ``eval_data`` (None: the set has no labels or answers)."""
    samples = list(getattr(eval_data, "samples", []))
    classes = getattr(eval_data, "class_names", None)
    labels = [getattr(s, "label", None) for s in samples]
    if classes and samples and all(label is not None for label in labels):
        majority = Counter(labels).most_common(1)[0][1] / len(labels)
        return max(1.0 / len(classes), majority)
    answers = [getattr(s, "answer", None) for s in samples]
    answers = [a.strip().lower() for a in answers if a is not None]
    if answers:
        return Counter(answers).most_common(1)[0][1] / len(answers)
    return None


def reference_floor(chance: float, recipe_floor: float | None) -> float:
    """The reference accuracy below which accuracy gates fail as 'the eval set does not fit this model'."""
    floor = chance + HEADROOM_FRACTION * (1.0 - chance)
    return max(floor, recipe_floor) if recipe_floor is not None else floor


def non_finite_outputs(outputs: dict[str, np.ndarray]) -> list[str]:
    """Names of float reference outputs holding NaN or Inf."""
    return [k for k, v in outputs.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
