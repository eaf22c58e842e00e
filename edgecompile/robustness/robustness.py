"""Accuracy under corruption for the artifact and the FP32 reference; RS and mCE (seed 002).

RS  = mean accuracy over (corruption, severity) pairs / clean accuracy.
mCE = mean over pairs of (clean accuracy - corrupted accuracy), the absolute drop.
Works with any eval set whose ``.samples`` carry ``.image`` and ``.label`` and that has
``.class_names`` and ``.prompts``: the adapter scores it exactly as validate does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgecompile.errors import InputError
from edgecompile.models.adapter import ComponentRunner, LoadedModel
from edgecompile.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt


@dataclass(frozen=True)
class CorruptedSample:
    image: Any
    label: str | None
    text: str | None = None


@dataclass(frozen=True)
class CorruptedSet:
    samples: list[CorruptedSample]
    prompts: list[str]
    class_names: list[str]


def check_labelled(eval_set: Any) -> None:
    samples = list(getattr(eval_set, "samples", []))
    if not samples or any(getattr(s, "image", None) is None or getattr(s, "label", None) is None for s in samples) or not getattr(eval_set, "class_names", None):
        raise InputError("robustness needs a labelled image eval set (samples with .image and .label, and .class_names); eval.set 'synthetic' has no labels: use 'zero-shot'")


def corrupted_set(eval_set: Any, name: str, severity: int, seed: int = 0) -> CorruptedSet:
    """The eval set with every image corrupted (sample i uses seed ``seed + i``: deterministic)."""
    samples = [CorruptedSample(corrupt(s.image, name, severity, seed + i), s.label, getattr(s, "text", None)) for i, s in enumerate(eval_set.samples)]
    return CorruptedSet(samples, list(eval_set.prompts), list(eval_set.class_names))


def summarize(clean: float, accuracy: dict[str, dict[str, float]]) -> dict[str, Any]:
    values = [v for per in accuracy.values() for v in per.values()]
    mean = float(np.mean(values)) if values else float("nan")
    return {
        "clean": clean,
        "mean_corrupted": mean,
        "rs": mean / clean if clean > 0 else None,
        "mce": float(np.mean([clean - v for v in values])) if values else None,
        "accuracy": accuracy,
        "per_corruption_mean": {c: float(np.mean(list(per.values()))) for c, per in accuracy.items()},
    }


def evaluate_robustness(
    adapter: Any,
    loaded: LoadedModel,
    runners: dict[str, ComponentRunner],
    eval_set: Any,
    corruptions: tuple[str, ...] = CORRUPTIONS,
    severities: tuple[int, ...] = SEVERITIES,
    seed: int = 0,
    progress: Any = None,
) -> dict[str, Any]:
    """Clean and corrupted accuracy of each runner (e.g. ``artifact`` and ``reference``)."""
    check_labelled(eval_set)
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise InputError(f"--corruption: unknown {', '.join(unknown)}; expected one of {', '.join(CORRUPTIONS)}")
    clean = {who: float(adapter.evaluate(loaded, run, eval_set)[0]["accuracy"]) for who, run in runners.items()}
    accuracy: dict[str, dict[str, dict[str, float]]] = {who: {} for who in runners}
    for name in corruptions:
        for severity in severities:
            shifted = corrupted_set(eval_set, name, severity, seed)
            for who, run in runners.items():
                accuracy[who].setdefault(name, {})[str(severity)] = float(adapter.evaluate(loaded, run, shifted)[0]["accuracy"])
            if progress is not None:
                progress(name, severity, {who: accuracy[who][name][str(severity)] for who in runners})
    out: dict[str, Any] = {"corruptions": list(corruptions), "severities": list(severities), "samples": len(eval_set.samples), "seed": seed}
    for who in runners:
        out[who] = summarize(clean[who], accuracy[who])
    if "artifact" in out and "reference" in out and out["reference"]["rs"]:
        out["rs_ratio_artifact_vs_reference"] = (out["artifact"]["rs"] or 0.0) / out["reference"]["rs"]
    return out


def limit_samples(eval_set: Any, count: int | None) -> Any:
    """The first ``count`` samples of ``eval_set`` (same prompts and classes)."""
    if count is None or count >= len(eval_set.samples):
        return eval_set
    try:
        return replace(eval_set, samples=list(eval_set.samples)[:count])
    except TypeError:
        return CorruptedSet(list(eval_set.samples)[:count], list(eval_set.prompts), list(eval_set.class_names))
