"""Image variants for calibration-set sensitivity studies (EdgeVLM seed 002).

A calibration set drawn only from dark, gray or pure-noise images shifts activation ranges;
these variants let the project measure how much that matters.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

VARIANTS: tuple[str, ...] = ("clean", "dark", "gray", "noise")
DARK_FACTOR = 0.3


def apply_variant(image: Image.Image, variant: str, *, noise_seed: int = 0) -> Image.Image:
    """Return `image` transformed by `variant`; 'noise' ignores the image's content."""
    if variant == "clean":
        return image
    if variant == "dark":
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) * DARK_FACTOR
        return Image.fromarray(np.round(arr).astype(np.uint8), "RGB")
    if variant == "gray":
        return ImageOps.grayscale(image).convert("RGB")
    if variant == "noise":
        rng = np.random.default_rng(noise_seed)
        arr = rng.integers(0, 256, size=(image.height, image.width, 3), dtype=np.uint8)
        return Image.fromarray(arr, "RGB")
    raise ValueError(f"unknown image variant {variant!r}: expected one of {', '.join(VARIANTS)}")
