"""The unit every calibration and eval set yields, whatever its source."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Sample:
    """An image, a text, or both, with optional ground truth.

    `text` is what a text encoder or decoder sees (a caption or prompt); `label` is the
    zero-shot class name; `question`/`answer` are for generative VLMs.
    """

    image: Image.Image | None
    text: str | None
    label: str | None = None
    question: str | None = None
    answer: str | None = None
