"""Where calibration and eval samples come from: named sets in calibration_sets/, the bundled
world's eval splits, or ``synthetic`` (seeded random images and captions, for random-weight
models and benchmarks, where task accuracy means nothing but drift and latency do).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompile.config.resolve import resolve
from edgecompile.errors import InputError


_WORDS = ("red", "green", "blue", "yellow", "circle", "square", "triangle", "star", "left", "right", "center", "a", "photo", "of", "on", "the")


# Questions for generative models (random images: the answers are for plumbing, not for accuracy).
_QUESTIONS = (
    ("what color is the shape ?", ("red", "green", "blue", "yellow")),
    ("what is the shape ?", ("circle", "square", "triangle", "star")),
    ("is the shape on the left ?", ("yes", "no")),
)


@dataclass(frozen=True)
class SyntheticSample:
    """Duck-types edgecompile.data.samples.Sample for the synthetic source."""

    image: object
    text: str
    label: str | None = None
    question: str | None = None
    answer: str | None = None


@dataclass(frozen=True)
class SyntheticEvalSet:
    samples: list[SyntheticSample]
    prompts: list[str]
    class_names: list[str] | None = None


def synthetic_samples(count: int, seed: int = 0, size: int = 224) -> Iterator[SyntheticSample]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    qa = np.random.default_rng(seed + 10_000)  # its own stream: captions and images stay what they were
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        words = " ".join(rng.choice(_WORDS, size=int(rng.integers(3, 9))))
        template, answers = _QUESTIONS[int(qa.integers(len(_QUESTIONS)))]
        yield SyntheticSample(Image.fromarray(pixels), words, question=template, answer=str(qa.choice(answers)))


def _calibration_file(name: str) -> Path:
    try:
        return resolve("calibration_set", name)
    except InputError as exc:
        raise InputError(f"calibration.set: {exc}") from None


def calibration_samples(name: str, count: int) -> Iterator[object]:
    """Samples of calibration set ``name`` (a name in calibration_sets/ or a YAML path)."""
    if name == "synthetic":
        yield from synthetic_samples(count, seed=1)
        return
    try:
        from edgecompile.data.calibration_sets import load_calibration_set
    except ImportError as exc:
        raise InputError(f"calibration.set: '{name}' needs edgecompile.data, which is not installed; use 'synthetic'") from exc
    try:
        yield from load_calibration_set(str(_calibration_file(name)), Path('.')).samples(count)
    except ValueError as exc:
        raise InputError(f"calibration.set: {exc}") from None


def calibration_fingerprint(name: str) -> str:
    if name == "synthetic":
        return "synthetic-v1"
    try:
        from edgecompile.data.calibration_sets import load_calibration_set

        return load_calibration_set(str(_calibration_file(name)), Path('.')).fingerprint()
    except (ImportError, ValueError) as exc:
        raise InputError(f"calibration.set: cannot resolve '{name}': {exc}") from None


def calibration_size(name: str) -> int | None:
    """How many samples calibration set ``name`` holds (None: ``synthetic``, as many as asked).

    Loading the set checks it whole (definition, every image of a folder, captions), so a bad set
    is refused when the build starts, not halfway through calibration.
    """
    if name == "synthetic":
        return None
    from edgecompile.data.calibration_sets import load_calibration_set

    try:
        return len(load_calibration_set(str(_calibration_file(name)), Path(".")))
    except ValueError as exc:
        raise InputError(f"calibration.set: {exc}") from None


BUILTIN_EVAL_SETS = ("auto", "zero-shot", "vqa", "synthetic")
_AUTO_NOT_BUNDLED = (
    "eval.set: 'auto' measures accuracy on the bundled shapes world, which only the bundled models were trained on; "
    "for this model it would compare chance with chance. Name an eval set of your own data (a name in eval_sets/ or "
    "the path of its YAML: classification, retrieval, vqa or captioning; see eval_sets/README.md), or 'synthetic' to "
    "measure drift and latency only"
)


def eval_data(kind: str, count: int, family: str = "dual_encoder", *, bundled: bool = True, near: Path | None = None) -> object:
    """The eval set the recipe asks for.

    ``auto`` is the bundled world's set for the model family, and only for a bundled model
    (``bundled``); any other name is a user eval set in ``eval_sets/`` (looked up beside ``near``,
    the recipe's path) or a YAML path.
    """
    if kind == "auto":
        if not bundled:
            raise InputError(_AUTO_NOT_BUNDLED)
        kind = "zero-shot" if family == "dual_encoder" else "vqa"
    if kind == "synthetic":
        samples = list(synthetic_samples(count, seed=2))
        return SyntheticEvalSet(samples, [s.text for s in samples[: min(count, 16)]])
    try:
        from edgecompile.data import eval_sets
    except ImportError as exc:
        raise InputError(f"eval.set: '{kind}' needs edgecompile.data, which is not installed; use 'synthetic'") from exc
    if kind == "zero-shot":
        return eval_sets.zero_shot_eval_set(count)
    if kind == "vqa":
        return eval_sets.vqa_eval_set(count)
    return user_eval_set(kind, family, near).limited(count)


def user_eval_set(name: str, family: str, near: Path | None = None) -> object:
    """Load the user eval set ``name`` (a name in eval_sets/ or a YAML path), checked against the model family."""
    from edgecompile.data.eval_definitions import FAMILY_OF_KIND
    from edgecompile.data.user_eval_sets import load_user_eval_set

    try:
        path = resolve("eval_set", name, near=near, field="eval.set")
    except InputError as exc:
        raise InputError(str(exc) if "eval.set" in str(exc) else f"eval.set: {exc}") from None
    try:
        es = load_user_eval_set(path)
    except ValueError as exc:
        raise InputError(f"{exc}\n(the recipe's eval.set: {name!r})") from None
    if FAMILY_OF_KIND[es.task] != family:
        fits = "classification or retrieval" if family == "dual_encoder" else "vqa or captioning"
        raise InputError(f"{path}: type: a {es.task} eval set measures {FAMILY_OF_KIND[es.task].replace('_', ' ')} models; this model is {family.replace('_', ' ')}: name a {fits} eval set")
    return es


def eval_fingerprint(kind: str, count: int, family: str = "dual_encoder", near: Path | None = None) -> str:
    """Changes when the data behind ``eval.set`` changes (user sets: definition, labels, image sizes and times)."""
    if kind in BUILTIN_EVAL_SETS:
        return f"{kind}-{count}"
    return user_eval_set(kind, family, near).limited(count).fingerprint()
