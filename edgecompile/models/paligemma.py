"""PaliGemma (PaliGemmaForConditionalGeneration): SigLIP tower, linear projector, Gemma decoder with a prefix-LM mask.

PaliGemma's prompt is ``<image> * image_seq_length + <bos> + prefix + "\\n"``; the image and prefix tokens
attend to each other bidirectionally (``token_type_ids == 0``), the generated suffix causally. In this
pipeline the whole prompt is prefilled at once and every generated token is decoded on its own, so
the prefix-LM mask is exactly: *every new token sees the whole past and every other new token*
(bidirectional within the prefill chunk; for a one-token decode step that is the causal mask). The
decoder graph builds that 4-D additive mask itself from ``attention_mask`` (padding only, no causal
triangle) and hands it to the Gemma model, so the graph's inputs are the shared decoder contract.
Positions are 1-indexed in PaliGemma (``position_layout = "1d_from_1"``, read by the runtime from
generation.json). Gemma scales ``inputs_embeds`` by sqrt(hidden) inside the language model, so
spliced image features and token embeddings go in unscaled, as in the HF forward.

The processor (PaliGemmaProcessor: a SigLIP image processor + the tokenizer, no video part) loads
through ``AutoProcessor``; the adapter's prompt is ``<image>`` + the question, which the processor
expands and frames with ``<bos>`` ... ``\\n``.
"""

from __future__ import annotations

from typing import Any

import torch

from edgecompile.models.adapter import LoadedModel
from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache
from edgecompile.models.generative import GenerativeAdapter


class PrefixLMDecoderWithCache(DecoderWithCache):
    """DecoderWithCache whose attention is bidirectional within the new tokens (PaliGemma's prefix-LM prefill)."""

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module, layers: int, sliding: bool) -> None:
        super().__init__(language_model, lm_head, layers)
        self.sliding = sliding  # PaliGemma 2 (Gemma 2 text) takes a mask per attention type

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        q = inputs_embeds.shape[1]
        visible = attention_mask[:, None, None, :].to(torch.bool).expand(-1, 1, q, -1)  # (batch, 1, new, past + new)
        mask = torch.where(visible, torch.zeros((), dtype=inputs_embeds.dtype), torch.full((), torch.finfo(inputs_embeds.dtype).min, dtype=inputs_embeds.dtype))
        masks: Any = {"full_attention": mask, "sliding_attention": mask} if self.sliding else mask
        cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=masks, position_ids=position_ids, cache=cache, use_cache=True, return_dict=True)
        logits = self.lm_head(out.last_hidden_state)
        present: list[torch.Tensor] = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (logits, *present)


class PaliGemmaVision(torch.nn.Module):
    """pixel_values -> projected image features [batch, image_seq_length, text_hidden] (get_image_features)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.m = model  # the PaliGemmaModel: paths vision_tower.*, multi_modal_projector.linear

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.m.multi_modal_projector(self.m.vision_tower(pixel_values).last_hidden_state)


class PaliGemmaAdapter(GenerativeAdapter):
    model_types = ("paligemma",)
    position_layout = "1d_from_1"

    def _model_class(self) -> Any:
        from transformers import PaliGemmaForConditionalGeneration

        return PaliGemmaForConditionalGeneration

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        cached = getattr(loaded, "_paligemma_vision", None)
        if cached is None:
            cached = PaliGemmaVision(loaded.model.model).eval()
            loaded._paligemma_vision = cached  # type: ignore[attr-defined]
        return cached

    def language_model(self, loaded: LoadedModel) -> torch.nn.Module:
        return loaded.model.model.language_model

    def decoder_module(self, loaded: LoadedModel, layout: CacheLayout) -> DecoderWithCache:
        sliding = getattr(loaded.config.get_text_config(decoder=True), "sliding_window", None) is not None
        return PrefixLMDecoderWithCache(self.language_model(loaded), self.lm_head(loaded), layout.layers, sliding)

    def prompt(self, loaded: LoadedModel, question: str) -> str:
        """``<image>`` + the question: PaliGemmaProcessor expands the image token and adds ``<bos>`` and the closing newline."""
        return f"{loaded.processor.image_token}{question}"
