"""SigLIP2 (Siglip2Model) dual encoder, exported at one fixed resolution.

SigLIP2's vision tower (the NaFlex design) takes images as padded patch sequences with a
``pixel_attention_mask`` and per-image ``spatial_shapes``, and resizes its learned position grid to
each image's shape on the fly. For the edge we fix the resolution: every image is resized to a square
of ``grid x grid`` patches, ``grid = isqrt(max_num_patches)`` from the checkpoint's image processor
(16 x 16 patches of 16 px = 256 px for ``siglip2-base-patch16-naflex``). With the shape fixed, the
mask (all ones) and ``spatial_shapes`` are constants inside the graph, the position-embedding resize is
constant-folded by the exporter, and the graph's input is an ordinary ``pixel_values [batch, 3, H, W]``
(patchified inside the graph exactly as the image processor's ``convert_image_to_patches`` does).

The host-side preprocessing runs the checkpoint's own (PIL-backed) image processor with
``max_num_patches = grid*grid`` (a non-square image is squashed to a square first), then folds its
patch sequence back into an image tensor: resize and normalisation are the processor's, and for
square inputs the features equal the full ``Siglip2Processor`` + ``get_image_features`` path.
The text tower is SigLIP's (pooled, no projection), shared with :class:`SiglipAdapter`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel
from edgecompile.models.dual_encoder import SiglipAdapter


class Siglip2FixedVision(torch.nn.Module):
    """pixel_values [batch, 3, grid*patch, grid*patch] -> pooled image_embeds [batch, hidden].

    The tower's own forward builds an attention mask from ``pixel_attention_mask`` and resizes the
    position grid with runtime checks (``torch._check``-style asserts the ONNX exporter cannot lower).
    At a fixed shape both are constants: no padding (no mask at all), and the resize — linear in the
    position table — is the matrix ``resize_weights`` computed once here by resizing an identity, so
    the position table itself stays a weight of the graph.
    """

    def __init__(self, model: torch.nn.Module, grid: int, patch: int) -> None:
        super().__init__()
        self.m = model  # module paths read m.vision_model.embeddings.patch_embedding, m.vision_model.head, ...
        self.grid = grid
        self.patch = patch
        embeddings = model.vision_model.embeddings
        side = embeddings.position_embedding_size
        identity = torch.eye(side * side).reshape(side, side, side * side)
        with torch.no_grad():
            weights = embeddings.resize_positional_embeddings(identity, torch.tensor([[grid, grid]]), max_length=grid * grid)[0]
        self.register_buffer("resize_weights", weights, persistent=False)  # (grid*grid, side*side)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, c = pixel_values.shape[0], pixel_values.shape[1]
        g, p = self.grid, self.patch
        # (b, c, g*p, g*p) -> (b, g*g, p*p*c), patch pixels row-major then channel, like convert_image_to_patches
        patches = pixel_values.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * c)
        vision = self.m.vision_model
        hidden = vision.embeddings.patch_embedding(patches) + self.resize_weights @ vision.embeddings.position_embedding.weight
        hidden = vision.post_layernorm(vision.encoder(inputs_embeds=hidden).last_hidden_state)
        return vision.head(hidden) if vision.use_head else hidden.mean(dim=1)


class Siglip2Adapter(SiglipAdapter):
    model_types = ("siglip2",)
    # The attention-pooling head (probe attention + MLP) is what maps the tower to the shared embedding
    # space (SigLIP has no projection layer): the default plan keeps it at projector precision.
    role_patterns = ((r"(^|\.)vision_model\.head\.", "projector"),)

    def _model_class(self) -> Any:
        from transformers import Siglip2Model

        return Siglip2Model

    def grid(self, loaded: LoadedModel) -> int:
        """Patches per side: the largest square within the image processor's ``max_num_patches``."""
        max_patches = int(getattr(loaded.processor.image_processor, "max_num_patches", 0) or loaded.config.vision_config.num_patches)
        grid = math.isqrt(max_patches)
        if grid < 1:
            raise InputError(f"{loaded.path / 'processor_config.json'}: image_processor.max_num_patches: expected a positive number, got {max_patches}")
        positions = int(loaded.config.vision_config.num_patches)
        if math.isqrt(positions) ** 2 != positions:
            raise InputError(f"{loaded.path / 'config.json'}: vision_config.num_patches: expected a square number (the position grid), got {positions}")
        return grid

    def image_size(self, loaded: LoadedModel) -> int:
        return self.grid(loaded) * int(loaded.config.vision_config.patch_size)

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        return Siglip2FixedVision(loaded.model, self.grid(loaded), int(loaded.config.vision_config.patch_size)).eval()

    def _pixels(self, loaded: LoadedModel, images: list[Any]) -> np.ndarray:
        size, patch, grid = self.image_size(loaded), int(loaded.config.vision_config.patch_size), self.grid(loaded)
        # A square image is left to the processor's own resize (so it equals the full processor's output);
        # any other is squashed to the square first, the fixed-resolution variant's convention.
        squares = [im if im.size[0] == im.size[1] else im.resize((size, size), _bilinear()) for im in map(_rgb, images)]
        out = loaded.processor.image_processor(images=squares, max_num_patches=grid * grid, patch_size=patch, return_tensors="np")
        shapes = np.asarray(out["spatial_shapes"])
        if not (shapes == grid).all():
            raise ValueError(f"SigLIP2 image processor gave spatial shapes {shapes.tolist()} for {size}x{size} images; expected {grid}x{grid}")
        patches = np.asarray(out["pixel_values"], np.float32)  # (n, grid*grid, patch*patch*3)
        n = patches.shape[0]
        return patches.reshape(n, grid, grid, patch, patch, 3).transpose(0, 5, 1, 3, 2, 4).reshape(n, 3, size, size).copy()


def _rgb(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB")


def _bilinear() -> Any:
    from PIL import Image

    return Image.Resampling.BILINEAR
