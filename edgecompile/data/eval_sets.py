"""Eval sets drawn from the world's `eval` split (never used for training or calibration)."""

from __future__ import annotations

from dataclasses import dataclass

from edgecompile.data.samples import Sample
from edgecompile.world import CLASS_NAMES, class_prompt, generate


@dataclass(frozen=True)
class ZeroShotEvalSet:
    """Images with class labels, plus the class names and one prompt per class."""

    samples: list[Sample]
    class_names: list[str]
    prompts: list[str]

    def label_indices(self) -> list[int]:
        """Return each sample's class index into `class_names`."""
        return [self.class_names.index(s.label) for s in self.samples]


def zero_shot_eval_set(count: int, seed: int = 0, size: int = 96) -> ZeroShotEvalSet:
    """Return `count` eval scenes for zero-shot classification over all world classes."""
    scenes = generate("eval", count, seed=seed, size=size)
    samples = [Sample(image=s.image, text=s.caption, label=s.label) for s in scenes]
    return ZeroShotEvalSet(samples=samples, class_names=list(CLASS_NAMES),
                           prompts=[class_prompt(c) for c in CLASS_NAMES])


@dataclass(frozen=True)
class VqaEvalSet:
    """Question-answer samples; the same ``.samples`` shape the evaluators read from every eval set."""

    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):  # noqa: ANN204 - iterates the samples
        return iter(self.samples)


def vqa_eval_set(count: int, seed: int = 0, size: int = 96) -> VqaEvalSet:
    """Return `count` question-answer samples, cycling question kinds across eval scenes.

    Scene i contributes its question number (i mod number-of-questions), so every kind of
    question (colour, shape, position, count) appears and no image is used twice.
    """
    scenes = generate("eval", count, seed=seed, size=size)
    samples = []
    for i, scene in enumerate(scenes):
        question, answer = scene.qa[i % len(scene.qa)]
        samples.append(Sample(image=scene.image, text=question, label=scene.label,
                              question=question, answer=answer))
    return VqaEvalSet(samples)
