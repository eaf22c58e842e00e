"""Accuracy under corruption for the artifact and the FP32 reference; RS, mCE and normalised CE.

RS  = mean accuracy over (corruption, severity) pairs / clean accuracy.
mCE = mean over pairs of (clean accuracy - corrupted accuracy), the absolute drop (seed 002's
      definition, kept as it is: a model that collapses on clean data has little left to drop, so
      it looks robust — the seed's W4A8-AWQ row has the best mCE at 0.417 clean accuracy).
CE  = ImageNet-C's normalised corruption error with the FP32 reference as the baseline model:
      CE_c = Σ_s err_{c,s} / Σ_s err^ref_{c,s} (err = 1 − accuracy), and ``ce_normalised`` is the
      mean of CE_c over corruptions: 1.0 is "as robust as the float model", above 1 is worse. It
      counts clean-data errors too, so a collapsed model cannot score well.
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


def check_protocol(corruptions: tuple[str, ...], severities: tuple[int, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The corruptions and severities, strictly: known names, integer severities 1..5, none repeated.

    A severity subset is allowed (a quick look) but is not seed 002's protocol: ``full_protocol``
    in the result says whether all ten corruptions at all five severities were run, and the sweep
    report does not put rows measured under different protocols side by side unmarked.
    """
    corruptions, severities = tuple(corruptions), tuple(severities)
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown or not corruptions:
        raise InputError(f"--corruption: unknown {', '.join(unknown) or '(none given)'}; expected one or more of {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES]
    if bad or not severities:
        raise InputError(f"--severity: expected integers in 1..5 (seed 002 uses all five), got {', '.join(map(repr, bad)) or '(none)'}")
    for what, values in (("--corruption", corruptions), ("--severity", severities)):
        if len(set(values)) != len(values):
            raise InputError(f"{what}: a value is listed twice ({', '.join(map(str, values))}); CE sums each severity once")
    return corruptions, tuple(sorted(severities))


def is_full_protocol(corruptions: list[str] | tuple[str, ...], severities: list[int] | tuple[int, ...]) -> bool:
    """All ten corruptions at severities 1..5: seed 002's (and ImageNet-C's) protocol."""
    return set(corruptions) == set(CORRUPTIONS) and sorted(severities) == list(SEVERITIES)


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
    corruptions, severities = check_protocol(corruptions, severities)
    clean = {who: float(adapter.evaluate(loaded, run, eval_set)[0]["accuracy"]) for who, run in runners.items()}
    accuracy: dict[str, dict[str, dict[str, float]]] = {who: {} for who in runners}
    for name in corruptions:
        for severity in severities:
            shifted = corrupted_set(eval_set, name, severity, seed)
            for who, run in runners.items():
                accuracy[who].setdefault(name, {})[str(severity)] = float(adapter.evaluate(loaded, run, shifted)[0]["accuracy"])
            if progress is not None:
                progress(name, severity, {who: accuracy[who][name][str(severity)] for who in runners})
    return assemble(clean, accuracy, corruptions, severities, len(eval_set.samples), seed)


def assemble(clean: dict[str, float], accuracy: dict[str, dict[str, dict[str, float]]], corruptions: tuple[str, ...], severities: tuple[int, ...], samples: int, seed: int) -> dict[str, Any]:
    """The robustness.json document: per runner its summary, CE against ``reference`` when present."""
    out: dict[str, Any] = {"corruptions": list(corruptions), "severities": list(severities), "full_protocol": is_full_protocol(corruptions, severities), "samples": samples, "seed": seed}
    for who in clean:
        out[who] = summarize(clean[who], accuracy[who])
    if "artifact" in out and "reference" in out and out["reference"]["rs"]:
        out["rs_ratio_artifact_vs_reference"] = (out["artifact"]["rs"] or 0.0) / out["reference"]["rs"]
    if "reference" in out:
        for who in clean:
            out[who].update(normalised_ce(accuracy[who], accuracy["reference"]))
    return out


def normalised_ce(accuracy: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, Any]:
    """ImageNet-C CE_c = Σ_s (1 − acc_{c,s}) / Σ_s (1 − acc^ref_{c,s}) per corruption, and their mean.

    A corruption on which the reference makes no error at all has no finite CE_c; it is left out of
    the mean and listed (``ce_undefined``), rather than divided by zero or silently dropped.
    """
    per: dict[str, float] = {}
    undefined = []
    for name, by_severity in accuracy.items():
        ref_err = sum(1.0 - reference[name][s] for s in by_severity)
        err = sum(1.0 - v for v in by_severity.values())
        if ref_err <= 0.0:
            undefined.append(name)
            continue
        per[name] = err / ref_err
    return {"ce_normalised": float(np.mean(list(per.values()))) if per else None, "ce_per_corruption": per, "ce_undefined": undefined}


def limit_samples(eval_set: Any, count: int | None) -> Any:
    """The first ``count`` samples of ``eval_set`` (same prompts and classes)."""
    if count is None or count >= len(eval_set.samples):
        return eval_set
    try:
        return replace(eval_set, samples=list(eval_set.samples)[:count])
    except TypeError:
        return CorruptedSet(list(eval_set.samples)[:count], list(eval_set.prompts), list(eval_set.class_names))
