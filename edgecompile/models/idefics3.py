"""Idefics3 / SmolVLM (Idefics3ForConditionalGeneration): SigLIP-style tower, pixel-shuffle connector, Llama decoder.

The HF image processor resizes an image so its longest edge fits ``size.longest_edge``, cuts it into
tiles of ``max_image_size`` (rows x cols, depending on the aspect ratio) and appends one global tile;
the prompt gets, per tile, ``<fake_token_around_image><row_r_col_c>`` + ``image_seq_len`` image tokens,
a newline after each row, then the global tile's block. Here the grid is fixed — ``rows x cols`` tiles
(an adapter setting, ``preferred_grid``, 2x2 by default, capped by the processor's ``size`` /
``max_image_size``) — so every image is resized to exactly ``rows*S x cols*S``: no tile is padded, the
``pixel_attention_mask`` is all ones and therefore not an input, the tower's position ids are the
plain 0..N-1 (what its bucketized fractional coordinates reduce to for an unpadded tile), and the
vision graph has one output length, ``(rows*cols + 1) * image_seq_len``.
A recipe's ``model_options.tile_grid`` replaces ``preferred_grid`` and is strict: a grid beyond
the processor's cap (or any grid when it does not split images) is refused before any stage runs.

``vision_encoder``: pixel_values [batch, rows*cols + 1, 3, S, S] -> image_features [batch, tokens, hidden]
(patch conv, position table, encoder, post-norm, pixel shuffle, modality projection inside the graph).
The prompt string for the image (row/column tags, global tag, image tokens) is built by the adapter
the way ``Idefics3Processor.replace_image_token`` does, from the tokenizer and the PIL-backed image
processor loaded separately (:mod:`edgecompile.models.processor_parts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel
from edgecompile.models.generative import GenerativeAdapter
from edgecompile.models.processor_parts import load_parts

FAKE_TOKEN = "<fake_token_around_image>"
GLOBAL_TAG = "<global-img>"


class Idefics3FixedTilesVision(torch.nn.Module):
    """(batch, tiles, 3, S, S) unpadded tiles -> connector output [batch, tiles * image_seq_len, hidden]."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.m = model  # the Idefics3Model: paths vision_model.*, connector.modality_projection.*

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, t = pixel_values.shape[0], pixel_values.shape[1]
        tiles = pixel_values.reshape(b * t, pixel_values.shape[2], pixel_values.shape[3], pixel_values.shape[4])
        vision = self.m.vision_model
        hidden = vision.embeddings.patch_embedding(tiles).flatten(2).transpose(1, 2)
        hidden = hidden + vision.embeddings.position_embedding.weight[None, : hidden.shape[1]]
        hidden = vision.post_layernorm(vision.encoder(inputs_embeds=hidden).last_hidden_state)
        features = self.m.connector(hidden)  # (b*t, image_seq_len, C)
        return features.reshape(b, t * features.shape[1], features.shape[2])


class Idefics3Adapter(GenerativeAdapter):
    model_types = ("idefics3",)
    image_processor_class = "Idefics3ImageProcessorPil"
    preferred_grid = (2, 2)
    tile_grid: tuple[int, int] | None = None  # the recipe's model_options.tile_grid; exact, no capping

    def _model_class(self) -> Any:
        from transformers import Idefics3ForConditionalGeneration

        return Idefics3ForConditionalGeneration

    def load_processor(self, path: Any, trust_remote_code: bool = False) -> Any:
        return load_parts(path, self.image_processor_class, "<image>", trust_remote_code)

    def language_model(self, loaded: LoadedModel) -> torch.nn.Module:
        return loaded.model.model.text_model

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        cached = getattr(loaded, "_idefics3_vision", None)
        if cached is None:
            cached = Idefics3FixedTilesVision(loaded.model.model).eval()
            loaded._idefics3_vision = cached  # type: ignore[attr-defined]
        return cached

    # --- the fixed grid ---------------------------------------------------------------------
    def tile_size(self, loaded: LoadedModel) -> int:
        return int(loaded.config.vision_config.image_size)

    def grid(self, loaded: LoadedModel) -> tuple[int, int]:
        """(rows, cols): the recipe's ``tile_grid``, else ``preferred_grid`` capped by how many tiles the processor's ``size.longest_edge`` allows."""
        return self._grid(loaded.processor.image_processor, self.tile_size(loaded), loaded.path)

    def set_tile_grid(self, grid: tuple[int, int], path: Any) -> None:
        """Export exactly ``grid``; one the checkpoint's image processor does not allow is refused now, before export."""
        import transformers

        self.tile_grid = (int(grid[0]), int(grid[1]))
        try:
            processor = getattr(transformers, self.image_processor_class).from_pretrained(path)
            tile = int(transformers.AutoConfig.from_pretrained(path).vision_config.image_size)
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"{path}: cannot read the image processor and vision config to check model_options.tile_grid: {type(exc).__name__}: {exc}") from None
        self._grid(processor, tile, path)

    def _grid(self, processor: Any, tile: int, path: Any) -> tuple[int, int]:
        source = f"{path}/preprocessor_config.json"
        max_tile = int((getattr(processor, "max_image_size", None) or {}).get("longest_edge", tile))
        if max_tile != tile:
            raise InputError(f"{source}: max_image_size.longest_edge: {max_tile} differs from the vision tower's image_size {tile}; expected them equal")
        if not getattr(processor, "do_image_splitting", True):
            if self.tile_grid is not None:
                raise InputError(f"recipe: model_options.tile_grid: {list(self.tile_grid)} asks for image tiles, but {source} sets do_image_splitting false (the global image only); expected tile_grid unset")
            return (0, 0)  # the global tile only
        longest = int((getattr(processor, "size", None) or {}).get("longest_edge", tile * max(self.tile_grid or self.preferred_grid)))
        cap = max(1, longest // tile)
        if self.tile_grid is not None:
            if max(self.tile_grid) > cap:
                raise InputError(f"recipe: model_options.tile_grid: {list(self.tile_grid)} exceeds what {source} allows (size.longest_edge {longest} px = {cap} tiles of {tile} px per side); expected rows and cols of at most {cap}")
            return self.tile_grid
        return (min(self.preferred_grid[0], cap), min(self.preferred_grid[1], cap))

    def tiles(self, loaded: LoadedModel) -> int:
        rows, cols = self.grid(loaded)
        return rows * cols + 1 if rows else 1

    def pixel_shape(self, loaded: LoadedModel) -> tuple[int, ...]:
        tile = self.tile_size(loaded)
        return (self.tiles(loaded), 3, tile, tile)

    def image_seq_len(self, loaded: LoadedModel) -> int:
        vcfg = loaded.config.vision_config
        return int((vcfg.image_size // vcfg.patch_size) ** 2 // loaded.config.scale_factor**2)

    # --- inputs ------------------------------------------------------------------------------
    def pixels(self, loaded: LoadedModel, image: Any) -> np.ndarray:
        from PIL import Image

        rows, cols = self.grid(loaded)
        tile = self.tile_size(loaded)
        height, width = max(rows, 1) * tile, max(cols, 1) * tile
        image = (Image.fromarray(image) if isinstance(image, np.ndarray) else image).convert("RGB")
        if image.size[0] * height != image.size[1] * width:  # not the grid's aspect ratio: squash, so no tile is padded
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        out = loaded.processor.image_processor(images=[[image]], size={"longest_edge": max(height, width)}, return_row_col_info=True, return_tensors="np")
        got = (int(out["rows"][0][0]), int(out["cols"][0][0]))
        pixels = np.asarray(out["pixel_values"], np.float32)
        expected = (1, *self.pixel_shape(loaded))
        if got != (rows, cols) or pixels.shape != expected:
            raise ValueError(f"Idefics3 image processor gave a {got[0]}x{got[1]} grid, pixel_values {pixels.shape}; expected {rows}x{cols}, {expected}")
        if "pixel_attention_mask" in out and not np.asarray(out["pixel_attention_mask"]).all():
            raise ValueError("Idefics3 image processor padded a tile of the fixed grid; expected none")
        return pixels

    def image_prompt(self, loaded: LoadedModel) -> str:
        """What ``Idefics3Processor.replace_image_token`` puts in place of one image on the fixed grid."""
        rows, cols = self.grid(loaded)
        image = loaded.processor.image_token * self.image_seq_len(loaded)
        text = ""
        for r in range(rows):
            for c in range(cols):
                text += f"{FAKE_TOKEN}<row_{r + 1}_col_{c + 1}>{image}"
            text += "\n"
        return text + ("\n" if rows else "") + f"{FAKE_TOKEN}{GLOBAL_TAG}{image}{FAKE_TOKEN}"

    def encode(self, loaded: LoadedModel, image: Any, question: str) -> tuple[np.ndarray, np.ndarray]:
        prompt = self.prompt(loaded, question)
        token = loaded.processor.image_token
        if prompt.count(token) != 1:
            raise ValueError(f"the chat-formatted prompt holds {prompt.count(token)} '{token}' strings; expected exactly one — check the chat template")
        ids = loaded.processor.tokenizer(prompt.replace(token, self.image_prompt(loaded)), return_tensors="np")["input_ids"].astype(np.int64)
        return ids, self.pixels(loaded, image)
