"""Fast batched image preprocessing for training, matching CLIPImageProcessor exactly.

Training converts thousands of 96x96 world images; doing it in numpy is much faster than
calling the processor per batch. `tests/zoo` checks that both give the same tensor.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_processor(size: int) -> CLIPImageProcessor:
    """Return the CLIP image processor saved with the bundled models."""
    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
    )


def to_uint8_batch(images: list[Image.Image]) -> torch.Tensor:
    """Stack RGB images into a uint8 tensor N x 3 x H x W (compact for caching)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def normalize(batch_uint8: torch.Tensor) -> torch.Tensor:
    """Rescale to [0, 1] and normalise with the CLIP mean and std, as float32."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (batch_uint8.float() / 255.0 - mean) / std
