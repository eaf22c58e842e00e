"""CLIP and SigLIP: an image tower and a text tower, each exported as its own graph.

``vision_encoder``: pixel_values -> image_embeds (projected; SigLIP's pooling head included).
``text_encoder``: input_ids, attention_mask -> text_embeds (projected).
Zero-shot accuracy is computed from any runner of these two graphs, so the FP32 reference and
every compiled artifact are scored by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecompile import progress
from edgecompile.errors import InputError
from edgecompile.models.tokenizer_check import check_tokenizer
from edgecompile.models.adapter import ComponentRunner, ComponentSpec, Feeds, LoadedModel

_BATCH = 16


class _Vision(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, projection: torch.nn.Module | None) -> None:
        super().__init__()
        self.m = model
        self.projection = projection  # the module path 'projection' is what roles.py reads as the projector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = self.m.vision_model(pixel_values=pixel_values).pooler_output
        return self.projection(pooled) if self.projection is not None else pooled


class _Text(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, projection: torch.nn.Module | None) -> None:
        super().__init__()
        self.m = model
        self.projection = projection  # the module path 'projection' is what roles.py reads as the projector

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.m.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.projection(pooled) if self.projection is not None else pooled


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class DualEncoderAdapter:
    """Shared logic for contrastive dual encoders; subclasses name the HF classes."""

    family = "dual_encoder"
    model_types: tuple[str, ...] = ()
    role_patterns: tuple[tuple[str, str], ...] = ()
    text_padding: str | bool = True

    def _model_class(self) -> Any:
        raise NotImplementedError

    def _projections(self, model: torch.nn.Module) -> tuple[torch.nn.Module | None, torch.nn.Module | None]:
        return getattr(model, "visual_projection", None), getattr(model, "text_projection", None)

    def load(self, path: Path, trust_remote_code: bool = False) -> LoadedModel:
        from transformers import AutoProcessor

        model = self._model_class().from_pretrained(path, trust_remote_code=trust_remote_code).eval()
        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
            check_tokenizer(processor, path)
        except (OSError, ValueError, TypeError, ImportError) as exc:  # ImportError: a processor class needing a package absent here
            raise InputError(f"{path}: cannot load the processor (tokenizer + image processor) the model needs: {exc}") from None
        return LoadedModel(path=path, model=model, processor=processor, config=model.config)

    def image_size(self, loaded: LoadedModel) -> int:
        """The square input resolution the vision graph is exported at."""
        return int(loaded.config.vision_config.image_size)

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        """pixel_values [batch, 3, H, W] -> image_embeds."""
        return _Vision(loaded.model, self._projections(loaded.model)[0])

    def components(self, loaded: LoadedModel) -> list[ComponentSpec]:
        _, text_proj = self._projections(loaded.model)
        vcfg = loaded.config.vision_config
        size = self.image_size(loaded)
        pixels = torch.randn(2, vcfg.num_channels if hasattr(vcfg, "num_channels") else 3, size, size, generator=torch.Generator().manual_seed(0))
        feeds = self._text_feeds(loaded, ["a photo of a red circle", "a green square on the left"])
        ids = torch.from_numpy(feeds["input_ids"])
        mask = torch.from_numpy(feeds["attention_mask"])
        text_axes = {0: "batch"} if self.text_padding == "max_length" else {0: "batch", 1: "sequence"}
        return [
            ComponentSpec("vision_encoder", self.vision_module(loaded), (pixels,), ("pixel_values",), ("image_embeds",), {"pixel_values": {0: "batch"}}),
            ComponentSpec("text_encoder", _Text(loaded.model, text_proj), (ids, mask), ("input_ids", "attention_mask"), ("text_embeds",), {"input_ids": text_axes, "attention_mask": text_axes}),
        ]

    # --- inputs -----------------------------------------------------------------------------
    def _pixels(self, loaded: LoadedModel, images: list[Any]) -> np.ndarray:
        out = loaded.processor(images=images, return_tensors="np")
        return out["pixel_values"].astype(np.float32)

    def _text_feeds(self, loaded: LoadedModel, texts: list[str]) -> Feeds:
        max_len = loaded.config.text_config.max_position_embeddings
        out = loaded.processor(text=texts, return_tensors="np", padding=self.text_padding, truncation=True, max_length=max_len)
        ids = out["input_ids"].astype(np.int64)
        mask = out["attention_mask"].astype(np.int64) if "attention_mask" in out else np.ones_like(ids)
        return {"input_ids": ids, "attention_mask": mask}

    def calibration_feeds(self, loaded: LoadedModel, samples: Iterable[Any], component: str) -> Iterator[Feeds]:
        """One feed dict per sample (batch 1): calibration streams, so memory does not grow."""
        for sample in samples:
            if component == "vision_encoder" and getattr(sample, "image", None) is not None:
                yield {"pixel_values": self._pixels(loaded, [sample.image])}
            elif component == "text_encoder" and getattr(sample, "text", None):
                yield self._text_feeds(loaded, [sample.text])

    def latency_feeds(self, loaded: LoadedModel, component: str) -> Feeds:
        if component == "vision_encoder":
            size = self.image_size(loaded)
            return {"pixel_values": np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
        return self._text_feeds(loaded, ["a photo of a red triangle on the left"])

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self, loaded: LoadedModel, run: ComponentRunner, eval_data: Any) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Run both towers over the eval data; return (metrics, outputs for drift comparison).

        Images are read one batch at a time (a user eval set's samples open their file when
        ``.image`` is read). Labelled samples with ``class_names``: zero-shot ``accuracy`` and, with
        more than five classes, ``accuracy.top5``; with several prompts per class (class-major) each
        class's template embeddings are averaged. ``caption_image`` (retrieval sets): recall@1/5/10 both ways.
        """
        from edgecompile.data.eval_metrics import class_embeddings, retrieval_recalls, top_k_accuracy

        samples = list(eval_data.samples)
        image_embeds = [run("vision_encoder", {"pixel_values": self._pixels(loaded, [s.image for s in samples[i : i + _BATCH]])})["image_embeds"] for i in progress.track(range(0, len(samples), _BATCH), "evaluate: image batches")]
        prompts = list(eval_data.prompts)
        text_embeds = [run("text_encoder", self._text_feeds(loaded, prompts[i : i + _BATCH]))["text_embeds"] for i in range(0, len(prompts), _BATCH)]
        images = np.concatenate(image_embeds)
        texts = np.concatenate(text_embeds)
        metrics: dict[str, float] = {}
        labels = [getattr(s, "label", None) for s in samples]
        if all(label is not None for label in labels) and getattr(eval_data, "class_names", None):
            index = {name: i for i, name in enumerate(eval_data.class_names)}
            # Prompts are class-major, the same number of templates per class (a set that copies only
            # prompts and class names, like robustness's corrupted sets, keeps the grouping).
            per_class, rest = divmod(len(texts), len(index))
            if rest or per_class == 0:
                raise ValueError(f"{len(texts)} prompts for {len(index)} classes: expected the same number of templates for every class")
            classes = texts if per_class == 1 else class_embeddings(texts, per_class)
            predicted = (_normalize(images) @ _normalize(classes).T).argmax(axis=1)
            truth = np.array([index[label] for label in labels])
            metrics["accuracy"] = float((predicted == truth).mean())
            if len(index) > 5:
                metrics["accuracy.top5"] = top_k_accuracy(images, classes, truth.tolist(), 5)
        caption_image = getattr(eval_data, "caption_image", None)
        if caption_image is not None:
            metrics.update(retrieval_recalls(images, texts, caption_image))
        return metrics, {"vision_encoder/image_embeds": images, "text_encoder/text_embeds": texts}


class ClipAdapter(DualEncoderAdapter):
    model_types = ("clip",)

    def _model_class(self) -> Any:
        from transformers import CLIPModel

        return CLIPModel


class SiglipAdapter(DualEncoderAdapter):
    """SigLIP pools with its own attention head inside each tower; there is no separate projection."""

    model_types = ("siglip",)
    text_padding = "max_length"

    def _model_class(self) -> Any:
        from transformers import SiglipModel

        return SiglipModel

    def _projections(self, model: torch.nn.Module) -> tuple[None, None]:
        return None, None
