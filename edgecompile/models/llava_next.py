"""LLaVA-NeXT and LLaVA-OneVision: anyres tiling exported at one fixed tile grid.

Both families cut an image into tiles of the vision tower's resolution on the best-fitting
``image_grid_pinpoints`` grid, plus one downscaled "base" tile, and pack the features as: base
tile tokens, then the grid's tokens row by row with an ``image_newline`` embedding at the end of
each row (after removing the rows/columns that padding added). The number of tokens therefore
depends on each image's aspect ratio — no fixed-shape graph can follow that. Here the grid is fixed
(``rows x cols`` tiles, the adapter setting ``preferred_grid``: the 2x2 pinpoint when the checkpoint
has one, else its largest pinpoint within 2x2, see :meth:`AnyresAdapter.grid`): every image is
resized to exactly that grid's resolution on the host, so nothing is padded, unpadding is a no-op,
``image_sizes`` is a constant and the vision graph has one output length:
``h*w + rows*h * (cols*w + 1)`` tokens for tiles of ``h x w`` patches (OneVision's "anyres_max_N"
downsampling applies as a fixed-size bilinear resize when the grid exceeds N tiles).
A recipe's ``model_options.tile_grid`` replaces ``preferred_grid`` and is strict: it must be one
of the checkpoint's pinpoint grids, else the build is refused before any stage runs.

``vision_encoder``: pixel_values [batch, 1 + rows*cols, 3, S, S] -> image_features [batch, tokens, hidden]
(tower, feature layer/strategy, projector, tile packing and newlines all inside the graph).
Preprocessing uses the checkpoint's PIL-backed image processor and tokenizer separately (see
:mod:`edgecompile.models.processor_parts`; OneVision's full processor needs torchvision), and the
adapter expands the prompt's one image token to the graph's token count.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel
from edgecompile.models.generative import GenerativeAdapter
from edgecompile.models.processor_parts import load_parts


class AnyresFixedGridVision(torch.nn.Module):
    """(batch, 1 + rows*cols, 3, S, S) tiles -> packed, projected image features with row newlines."""

    def __init__(self, model: torch.nn.Module, rows: int, cols: int, feature_layer: int | list[int], strategy: str, max_tiles: int | None) -> None:
        super().__init__()
        if strategy not in ("default", "full"):
            raise InputError(f"config.json: vision_feature_select_strategy: expected 'default' or 'full', got '{strategy}'")
        self.m = model  # the LlavaNextModel / LlavaOnevisionModel: paths vision_tower.*, multi_modal_projector.*
        self.rows, self.cols = rows, cols
        self.feature_layer = feature_layer
        self.strategy = strategy
        vcfg = model.config.vision_config
        self.side = int(vcfg.image_size) // int(vcfg.patch_size)
        height, width = rows * self.side, cols * self.side
        self.resized: tuple[int, int] | None = None
        if max_tiles is not None:  # OneVision: downsample the grid's feature map when it exceeds max_tiles tiles
            ratio = math.sqrt(height * width / (max_tiles * self.side**2))
            if ratio > 1.1:
                self.resized = (int(height // ratio), int(width // ratio))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, t = pixel_values.shape[0], pixel_values.shape[1]
        tiles = pixel_values.reshape(b * t, pixel_values.shape[2], pixel_values.shape[3], pixel_values.shape[4])
        hidden = self.m.vision_tower(tiles, output_hidden_states=True, return_dict=True).hidden_states
        layers = [self.feature_layer] if isinstance(self.feature_layer, int) else list(self.feature_layer)
        selected = torch.cat([hidden[i] for i in layers], dim=-1) if len(layers) > 1 else hidden[layers[0]]
        if self.strategy == "default":
            selected = selected[:, 1:]
        features = self.m.multi_modal_projector(selected)  # (b*t, side*side, C)
        c, s = features.shape[-1], self.side
        features = features.reshape(b, t, s * s, c)
        base = features[:, 0]
        grid = features[:, 1:].reshape(b, self.rows, self.cols, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, self.rows * s, self.cols * s)
        if self.resized is not None:
            grid = torch.nn.functional.interpolate(grid, list(self.resized), mode="bilinear")
        newline = self.m.image_newline.to(grid.dtype)[None, :, None, None].expand(b, c, grid.shape[2], 1)
        grid = torch.cat((grid, newline), dim=-1).flatten(2).transpose(1, 2)
        return torch.cat((base, grid), dim=1)


class AnyresAdapter(GenerativeAdapter):
    """Shared by LLaVA-NeXT and LLaVA-OneVision; subclasses name the HF classes."""

    image_processor_class = ""
    max_tiles_from_config = False
    preferred_grid = (2, 2)  # tiles (rows, cols) exported when the checkpoint's pinpoints include it
    tile_grid: tuple[int, int] | None = None  # the recipe's model_options.tile_grid; exact, no fallback

    def set_tile_grid(self, grid: tuple[int, int], path: Any) -> None:
        """Export exactly ``grid``; one the checkpoint's pinpoints do not allow is refused now, before export."""
        from transformers import AutoConfig

        self.tile_grid = (int(grid[0]), int(grid[1]))
        self.grid(AutoConfig.from_pretrained(path))

    def load_processor(self, path: Any, trust_remote_code: bool = False) -> Any:
        return load_parts(path, self.image_processor_class, "<image>", trust_remote_code)

    def image_token_id(self, config: Any) -> int:
        return int(getattr(config, "image_token_id", None) if getattr(config, "image_token_id", None) is not None else config.image_token_index)

    def grid(self, config: Any) -> tuple[int, int]:
        """(rows, cols) of the fixed tile grid: the recipe's ``tile_grid`` (must be a pinpoint), else ``preferred_grid`` if it is one, else the largest pinpoint within it."""
        tile = int(config.vision_config.image_size)
        grids = []
        for pinpoint in config.image_grid_pinpoints or []:
            h, w = int(pinpoint[0]), int(pinpoint[1])
            if h % tile or w % tile:
                raise InputError(f"config.json: image_grid_pinpoints: {pinpoint} is not a multiple of the tile size {tile}")
            grids.append((h // tile, w // tile))
        if not grids:
            raise InputError("config.json: image_grid_pinpoints: expected at least one [height, width] grid for anyres tiling")
        if self.tile_grid is not None:
            if self.tile_grid not in grids:
                allowed = ", ".join(f"[{r}, {c}]" for r, c in sorted(set(grids)))
                raise InputError(f"recipe: model_options.tile_grid: {list(self.tile_grid)} is not a grid of the checkpoint's config.json image_grid_pinpoints ({tile}-px tiles); expected one of {allowed}")
            return self.tile_grid
        if self.preferred_grid in grids:
            return self.preferred_grid
        within = [g for g in grids if g[0] <= self.preferred_grid[0] and g[1] <= self.preferred_grid[1]]
        return max(within or grids, key=lambda g: (g[0] * g[1], -abs(g[0] - g[1])))

    def pixel_shape(self, loaded: LoadedModel) -> tuple[int, ...]:
        rows, cols = self.grid(loaded.config)
        size = self.image_size(loaded.config)
        return (1 + rows * cols, 3, size, size)

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        cached = getattr(loaded, "_anyres_vision", None)
        if cached is None:
            c = loaded.config
            rows, cols = self.grid(c)
            max_tiles = None
            if self.max_tiles_from_config:
                aspect = str(getattr(c, "vision_aspect_ratio", "anyres_max_9"))
                try:
                    max_tiles = int(aspect.removeprefix("anyres_max_"))
                except ValueError:
                    raise InputError(f"config.json: vision_aspect_ratio: expected 'anyres_max_<N>', got '{aspect}'") from None
            cached = AnyresFixedGridVision(loaded.model.model, rows, cols, c.vision_feature_layer, c.vision_feature_select_strategy, max_tiles).eval()
            loaded._anyres_vision = cached  # type: ignore[attr-defined]
        return cached

    def language_model(self, loaded: LoadedModel) -> torch.nn.Module:
        return loaded.model.model.language_model

    # --- inputs ------------------------------------------------------------------------------
    def grid_resolution(self, config: Any) -> tuple[int, int]:
        rows, cols = self.grid(config)
        size = self.image_size(config)
        return rows * size, cols * size

    def pixels(self, loaded: LoadedModel, image: Any) -> np.ndarray:
        """[1, 1 + rows*cols, 3, S, S]: the image at the grid's aspect ratio, tiled by the checkpoint's own image processor."""
        from PIL import Image

        height, width = self.grid_resolution(loaded.config)
        image = (Image.fromarray(image) if isinstance(image, np.ndarray) else image).convert("RGB")
        if image.size[0] * height != image.size[1] * width:  # not the grid's aspect ratio: squash, so nothing is padded
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        out = loaded.processor.image_processor(images=[image], image_grid_pinpoints=[[height, width]], return_tensors="np")
        pixels = np.asarray(out["pixel_values"], np.float32)
        expected = (1, *self.pixel_shape(loaded))
        if pixels.shape != expected:
            raise ValueError(f"{type(loaded.processor.image_processor).__name__} gave pixel_values {pixels.shape} for the fixed {height}x{width} grid; expected {expected}")
        return pixels

    def encode(self, loaded: LoadedModel, image: Any, question: str) -> tuple[np.ndarray, np.ndarray]:
        """The prompt tokenized with one image token, then that token repeated to the vision graph's length."""
        ids = loaded.processor.tokenizer(self.prompt(loaded, question), return_tensors="np")["input_ids"].astype(np.int64)
        return expand_image_token(ids, self.image_token_id(loaded.config), self.image_tokens(loaded)), self.pixels(loaded, image)

    def image_tokens(self, loaded: LoadedModel) -> int:
        cached = getattr(loaded, "_anyres_tokens", None)
        if cached is None:
            cached = super().image_tokens(loaded)
            loaded._anyres_tokens = cached  # type: ignore[attr-defined]
        return cached


def expand_image_token(ids: np.ndarray, image_token_id: int, count: int) -> np.ndarray:
    """[1, n] ids with exactly one image token -> [1, n - 1 + count], the token repeated ``count`` times in place."""
    positions = np.flatnonzero(ids[0] == image_token_id)
    if len(positions) != 1:
        raise ValueError(f"the prompt holds {len(positions)} image tokens (id {image_token_id}); expected exactly one before expansion — check the chat template")
    p = int(positions[0])
    return np.concatenate([ids[:, :p], np.full((1, count), image_token_id, np.int64), ids[:, p + 1 :]], axis=1)


class LlavaNextAdapter(AnyresAdapter):
    model_types = ("llava_next",)
    image_processor_class = "LlavaNextImageProcessorPil"

    def _model_class(self) -> Any:
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration


class LlavaOnevisionAdapter(AnyresAdapter):
    model_types = ("llava_onevision",)
    image_processor_class = "LlavaOnevisionImageProcessorPil"
    max_tiles_from_config = True

    def _model_class(self) -> Any:
        from transformers import LlavaOnevisionForConditionalGeneration

        return LlavaOnevisionForConditionalGeneration
