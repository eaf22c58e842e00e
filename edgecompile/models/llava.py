"""Llava (LlavaForConditionalGeneration): CLIP/SigLIP vision tower + MLP projector + a causal LM.

``vision_encoder`` honours ``vision_feature_layer`` (an index or a list of indices, concatenated) and
``vision_feature_select_strategy`` ("default" drops the CLS token, "full" keeps it), as the HF model
does in ``get_image_features``; the projector is inside the graph so the decoder sees image features
ready to splice. Everything else (KV-cache decoder, prompting, evaluation) is shared with other
generative families in :mod:`edgecompile.models.generative`.
"""

from __future__ import annotations

from typing import Any

import torch

from edgecompile.errors import InputError
from edgecompile.models.adapter import LoadedModel
from edgecompile.models.generative import GenerativeAdapter


class LlavaVision(torch.nn.Module):
    """pixel_values -> projected image features [batch, image_tokens, text_hidden]."""

    def __init__(self, llava_model: torch.nn.Module, feature_layer: int | list[int], strategy: str) -> None:
        super().__init__()
        if strategy not in ("default", "full"):
            raise InputError(f"config.json: vision_feature_select_strategy: expected 'default' or 'full', got '{strategy}'")
        self.m = llava_model  # the LlavaModel: module paths read vision_tower.* and multi_modal_projector.*
        self.feature_layer = feature_layer
        self.strategy = strategy

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.m.vision_tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        layers = [self.feature_layer] if isinstance(self.feature_layer, int) else list(self.feature_layer)
        selected = [hidden[i][:, 1:] if self.strategy == "default" else hidden[i] for i in layers]
        return self.m.multi_modal_projector(torch.cat(selected, dim=-1) if len(selected) > 1 else selected[0])


class LlavaAdapter(GenerativeAdapter):
    model_types = ("llava",)

    def _model_class(self) -> Any:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        cached = getattr(loaded, "_llava_vision", None)
        if cached is None:
            c = loaded.config
            cached = LlavaVision(loaded.model.model, c.vision_feature_layer, c.vision_feature_select_strategy).eval()
            loaded._llava_vision = cached  # type: ignore[attr-defined]
        return cached

    def language_model(self, loaded: LoadedModel) -> torch.nn.Module:
        return loaded.model.model.language_model
