"""Qwen2-VL (Qwen2VLForConditionalGeneration) at one fixed image resolution.

Vision tower: a Conv3d patch embedding over (temporal 2 x 14 x 14) patches, blocks with 2-D rotary
attention (row / column rotary positions per patch), a patch merger (2x2 neighbouring patches ->
one token, LayerNorm + MLP). The HF forward takes all images packed in one sequence and splits the
attention with ``cu_seqlens`` via ``.tolist()`` — data-dependent shapes no fixed graph can hold. At a
fixed resolution (``side x side`` pixels: the largest multiple of patch*merge <= ``target_side``
that the checkpoint's image processor allows, 448 px = 16x16 merged tokens for the 2B/7B models)
the rotary cos/sin are constants computed once from the same ``get_vision_position_ids`` the tower
uses, and the graph runs the tower's own blocks (their ``qkv``/``proj``/``mlp``/``norm`` modules) with
ordinary batched attention over one image's patches: ``pixel_values [batch, patches, 3*2*14*14]`` ->
``image_features [batch, merged tokens, hidden]``.

M-RoPE positions (``position_ids`` of shape (3, 1, n): temporal, row, column) are computed *outside*
the graph, by the runtime (``GenerationSpec.position_layout = "mrope"`` with the fixed ``image_grid``,
see :mod:`edgecompile.runtime.generate`): they depend on where the image tokens sit in the prompt,
which is host-side knowledge (the tokenized prompt), and keeping them an input leaves the decoder
graph the shared contract (a Qwen2 decoder with qkv bias whose rotary takes 3-section positions).

Preprocessing: the tokenizer, the PIL-backed ``Qwen2VLImageProcessorPil`` and the chat template are
loaded separately (the full Qwen2VLProcessor builds a video processor needing torchvision); the
adapter resizes to the fixed square and expands ``<|image_pad|>`` to the merged token count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel
from edgecompile.models.generative import GenerativeAdapter
from edgecompile.models.processor_parts import load_parts
from edgecompile.runtime.generate import GenerationSpec

TARGET_SIDE = 448


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Qwen2VLFixedVision(torch.nn.Module):
    """pixel_values [batch, grid_h*grid_w, C*T*P*P] (the processor's patch rows for one image) -> merged features.

    Qwen2.5-VL (``fullatt_block_indexes`` in the tower): patches are reordered window by window (the
    tower's ``get_vision_window_index``), windowed blocks attend within their window through a
    constant block-diagonal mask, the full-attention blocks see every patch, and the merger's output
    is put back in raster order — all fixed at this resolution.
    """

    def __init__(self, visual: torch.nn.Module, grid_h: int, grid_w: int) -> None:
        super().__init__()
        from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

        self.visual = visual  # module paths visual.patch_embed.proj, visual.blocks.N.attn.qkv, visual.merger.mlp ...
        merge = visual.spatial_merge_size
        unit = merge * merge
        grid = torch.tensor([[1, grid_h, grid_w]])
        n = grid_h * grid_w
        positions = get_vision_position_ids(grid, merge)
        with torch.no_grad():
            cos, sin = visual.rotary_pos_emb(torch.zeros(1), positions)
        order = torch.arange(n)
        self.full_blocks: tuple[int, ...] = tuple(range(len(visual.blocks)))
        window_mask = torch.zeros(n, n)
        reverse = torch.arange(n // unit)
        full = getattr(visual, "fullatt_block_indexes", None)
        if full is not None:
            window_index, cu = get_vision_window_index(grid, spatial_merge_size=merge, window_size=visual.window_size, patch_size=visual.patch_size)
            order = (window_index[:, None] * unit + torch.arange(unit)).reshape(-1)
            window = torch.zeros(n, dtype=torch.int64)
            for w, (start, end) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
                window[start:end] = w
            window_mask = torch.where(window[:, None] == window[None, :], 0.0, float("-inf"))
            reverse = torch.argsort(window_index)
            self.full_blocks = tuple(int(i) for i in full)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("reverse", reverse, persistent=False)
        self.register_buffer("window_mask", window_mask[None, None], persistent=False)
        self.register_buffer("cos", cos.float()[order][None, None], persistent=False)  # (1, 1, patches, head_dim), window order
        self.register_buffer("sin", sin.float()[order][None, None], persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, n = pixel_values.shape[0], pixel_values.shape[1]
        visual = self.visual
        hidden = visual.patch_embed(pixel_values.reshape(b * n, pixel_values.shape[2])).reshape(b, n, -1)
        hidden = hidden[:, self.order]
        for i, block in enumerate(visual.blocks):
            attn = block.attn
            x = block.norm1(hidden)
            qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, b, heads, n, head_dim)
            q, k, v = qkv[0], qkv[1], qkv[2]
            q = q * self.cos + _rotate_half(q) * self.sin
            k = k * self.cos + _rotate_half(k) * self.sin
            mask = None if i in self.full_blocks else self.window_mask
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)
            hidden = hidden + attn.proj(out.transpose(1, 2).reshape(b, n, -1))
            hidden = hidden + block.mlp(block.norm2(hidden))
        merged = visual.merger(hidden.reshape(b * n, -1))
        return merged.reshape(b, -1, merged.shape[-1])[:, self.reverse]


class Qwen2VLAdapter(GenerativeAdapter):
    model_types = ("qwen2_vl",)
    position_layout = "mrope"
    image_processor_class = "Qwen2VLImageProcessorPil"
    role_patterns = ((r"(^|\.)merger\.", "projector"), (r"patch_embed", "patch_embed"), (r"\.attn\.proj$", "attn_out"))

    def _model_class(self) -> Any:
        from transformers import Qwen2VLForConditionalGeneration

        return Qwen2VLForConditionalGeneration

    def load_processor(self, path: Any, trust_remote_code: bool = False) -> Any:
        return load_parts(path, self.image_processor_class, "<|image_pad|>", trust_remote_code)

    def language_model(self, loaded: LoadedModel) -> torch.nn.Module:
        return loaded.model.model.language_model

    # --- the fixed resolution ----------------------------------------------------------------
    def side(self, config: Any) -> int:
        """The fixed square side in pixels, from the checkpoint's image processor limits (config._name_or_path)."""
        cached = getattr(config, "_edgecompile_side", None)
        if cached is not None:
            return cached
        from transformers import Qwen2VLImageProcessorPil

        vcfg = config.vision_config
        factor = int(vcfg.patch_size) * int(vcfg.spatial_merge_size)
        try:
            processor = Qwen2VLImageProcessorPil.from_pretrained(config._name_or_path)
            size = processor.size
            low, high = int(size["shortest_edge"]), int(size["longest_edge"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{config._name_or_path}: cannot read the image processor's min/max pixels for the fixed resolution: {exc}") from None
        side = factor * (TARGET_SIDE // factor)
        while side > factor and side * side > high:
            side -= factor
        if side * side < low or side * side > high:
            raise InputError(f"{config._name_or_path}: image processor size: no square multiple of {factor} px fits min_pixels {low} .. max_pixels {high}")
        config._edgecompile_side = side
        return side

    def grid(self, config: Any) -> tuple[int, int]:
        """Patches per side of the fixed resolution (before merging)."""
        side = self.side(config) // int(config.vision_config.patch_size)
        return side, side

    def image_size(self, config: Any) -> int:
        return self.side(config)

    def pixel_shape(self, loaded: LoadedModel) -> tuple[int, ...]:
        vcfg = loaded.config.vision_config
        gh, gw = self.grid(loaded.config)
        return (gh * gw, int(vcfg.in_channels) * int(vcfg.temporal_patch_size) * int(vcfg.patch_size) ** 2)

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        cached = getattr(loaded, "_qwen2vl_vision", None)
        if cached is None:
            cached = Qwen2VLFixedVision(loaded.model.model.visual, *self.grid(loaded.config)).eval()
            loaded._qwen2vl_vision = cached  # type: ignore[attr-defined]
        return cached

    def generation_spec(self, config: Any) -> GenerationSpec:
        base = super().generation_spec(config)
        merge = int(config.vision_config.spatial_merge_size)
        gh, gw = self.grid(config)
        return GenerationSpec(**{**base.__dict__, "image_grid": (gh // merge, gw // merge)})

    # --- inputs ------------------------------------------------------------------------------
    def pixels(self, loaded: LoadedModel, image: Any) -> np.ndarray:
        from PIL import Image

        side = self.side(loaded.config)
        image = (Image.fromarray(image) if isinstance(image, np.ndarray) else image).convert("RGB")
        if image.size != (side, side):
            image = image.resize((side, side), Image.Resampling.BICUBIC)
        out = loaded.processor.image_processor(images=[image], return_tensors="np")
        grid = np.asarray(out["image_grid_thw"]).reshape(-1).tolist()
        gh, gw = self.grid(loaded.config)
        if grid != [1, gh, gw]:
            raise ValueError(f"Qwen2-VL image processor gave image_grid_thw {grid} for a {side}x{side} image; expected [1, {gh}, {gw}]")
        return np.asarray(out["pixel_values"], np.float32)[None]

    def encode(self, loaded: LoadedModel, image: Any, question: str) -> tuple[np.ndarray, np.ndarray]:
        prompt = self.prompt(loaded, question)
        token = loaded.processor.image_token
        if prompt.count(token) != 1:
            raise ValueError(f"the chat-formatted prompt holds {prompt.count(token)} '{token}' strings; expected exactly one — check the chat template")
        merge = int(loaded.config.vision_config.spatial_merge_size)
        gh, gw = self.grid(loaded.config)
        ids = loaded.processor.tokenizer(prompt.replace(token, token * (gh * gw // merge**2)), return_tensors="np")["input_ids"].astype(np.int64)
        return ids, self.pixels(loaded, image)


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: the same decoder, M-RoPE and merger; window attention, RMSNorm and SwiGLU in the tower."""

    model_types = ("qwen2_5_vl",)

    def _model_class(self) -> Any:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration
