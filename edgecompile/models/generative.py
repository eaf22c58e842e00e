"""Shared logic for generative VLMs (image + prompt -> text): Llava today, Idefics3/SmolVLM and Qwen2-VL next.

A family adapter subclasses :class:`GenerativeAdapter` and says only what differs: the HF model class,
the vision module (pixel_values -> projected image features), where the language model and lm_head
live, and the image token id. Prompting (chat template), calibration feeds, evaluation (answer
exact match, token agreement, time to first token, decode tokens/s) and latency feeds are common,
and run through :mod:`edgecompile.runtime.generate` so the reference and the artifact share one code path.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecompile import progress
from edgecompile.errors import InputError
from edgecompile.models.tokenizer_check import check_tokenizer
from edgecompile.models.adapter import ComponentRunner, ComponentSpec, Feeds, LoadedModel
from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs, decoder_parity
from edgecompile.runtime.generate import GenerationSpec, generate, splice_image_features

EVAL_MAX_NEW_TOKENS = 12
LATENCY_PROMPT_TOKENS = 16
DEFAULT_QUESTION = "what is in the image ?"


class EmbedTokens(torch.nn.Module):
    """input_ids -> inputs_embeds (the decoder's own embedding table, exported on its own)."""

    def __init__(self, embed_tokens: torch.nn.Module) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)


def normalize_answer(text: str) -> str:
    """VQA-style normalization: lowercase, no punctuation or articles, single spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(w for w in text.split() if w not in {"a", "an", "the"})


class GenerativeAdapter:
    """Base for image+prompt -> text families; subclasses fill in the model-specific hooks."""

    family = "generative"
    model_types: tuple[str, ...] = ()
    role_patterns: tuple[tuple[str, str], ...] = ()
    position_layout = "1d"  # see GenerationSpec.position_ids

    # --- hooks -------------------------------------------------------------------------------
    def _model_class(self) -> Any:
        raise NotImplementedError

    def vision_module(self, loaded: LoadedModel) -> torch.nn.Module:
        raise NotImplementedError

    def language_model(self, loaded: LoadedModel) -> torch.nn.Module:
        raise NotImplementedError

    def lm_head(self, loaded: LoadedModel) -> torch.nn.Module:
        return loaded.model.lm_head

    def image_token_id(self, config: Any) -> int:
        return int(config.image_token_id)

    def image_size(self, config: Any) -> int:
        return int(config.vision_config.image_size)

    def pixel_shape(self, loaded: LoadedModel) -> tuple[int, ...]:
        """The vision graph's input shape for one image, without the batch axis (tiling families add a tile axis)."""
        size = self.image_size(loaded.config)
        return (3, size, size)

    # --- loading -------------------------------------------------------------------------------
    def load(self, path: Path, trust_remote_code: bool = False) -> LoadedModel:
        model = self._model_class().from_pretrained(path, trust_remote_code=trust_remote_code).eval()
        return LoadedModel(path=path, model=model, processor=self.load_processor(path, trust_remote_code), config=model.config)

    def load_processor(self, path: Path, trust_remote_code: bool = False) -> Any:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError, ImportError) as exc:  # ImportError: e.g. a video processor needing torchvision
            raise InputError(f"{path}: cannot load the processor (tokenizer + image processor + chat template) the model needs: {exc}") from None
        check_tokenizer(processor, path)
        return processor

    def generation_spec(self, config: Any) -> GenerationSpec:
        text = config.get_text_config(decoder=True)
        layout = CacheLayout.from_text_config(text)
        eos = getattr(text, "eos_token_id", None)
        eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
        return GenerationSpec(self.image_token_id(config), tuple(int(e) for e in eos_ids), layout.layers, layout.kv_heads, layout.head_dim, layout.hidden, layout.vocab, self.position_layout)

    # --- components ----------------------------------------------------------------------------
    def decoder_module(self, loaded: LoadedModel, layout: CacheLayout) -> DecoderWithCache:
        """The exported decoder; a family with another attention mask (PaliGemma's prefix-LM) returns its own subclass."""
        return DecoderWithCache(self.language_model(loaded), self.lm_head(loaded), layout.layers)

    def components(self, loaded: LoadedModel) -> list[ComponentSpec]:
        pixels = torch.randn(2, *self.pixel_shape(loaded), generator=torch.Generator().manual_seed(0))
        text_cfg = loaded.config.get_text_config(decoder=True)
        layout = CacheLayout.from_text_config(text_cfg)
        ids = torch.randint(0, text_cfg.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
        decoder = self.decoder_module(loaded, layout).eval()
        return [
            ComponentSpec("vision_encoder", self.vision_module(loaded).eval(), (pixels,), ("pixel_values",), ("image_features",), {"pixel_values": {0: "batch"}}),
            ComponentSpec("embed_tokens", EmbedTokens(self.language_model(loaded).get_input_embeddings()).eval(), (ids,), ("input_ids",), ("inputs_embeds",), {"input_ids": {0: "batch", 1: "sequence"}}),
            ComponentSpec(
                "decoder",
                decoder,
                decoder_example_inputs(layout),
                ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()),
                ("logits", *layout.present_names()),
                decoder_dynamic_axes(layout),
                parity_check=lambda path: decoder_parity(decoder, layout, path),
            ),
        ]

    # --- inputs ----------------------------------------------------------------------------------
    def prompt(self, loaded: LoadedModel, question: str) -> str:
        """The chat-formatted prompt with one image, ending where the assistant's answer starts."""
        processor = loaded.processor
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        if getattr(processor, "chat_template", None):
            return processor.apply_chat_template(messages, add_generation_prompt=True)
        token = getattr(processor, "image_token", "<image>")
        return f"USER: {token}\n{question} ASSISTANT:"

    def encode(self, loaded: LoadedModel, image: Any, question: str) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids [1, n] with the image tokens expanded, pixel_values [1, 3, H, W])."""
        out = loaded.processor(images=image, text=self.prompt(loaded, question), return_tensors="np")
        return out["input_ids"].astype(np.int64), out["pixel_values"].astype(np.float32)

    def _torch_prefill_feeds(self, loaded: LoadedModel, image: Any, question: str, layout: CacheLayout) -> Feeds:
        ids, pixels = self.encode(loaded, image, question)
        with torch.no_grad():
            features = self.vision_module(loaded)(torch.from_numpy(pixels)).numpy()
            embeds = self.language_model(loaded).get_input_embeddings()(torch.from_numpy(ids)).numpy()
        embeds = splice_image_features(ids, embeds, features, self.image_token_id(loaded.config))
        n = ids.shape[1]
        positions = self.generation_spec(loaded.config).prompt_position_ids(ids)[0]
        return {"inputs_embeds": embeds, "attention_mask": np.ones((1, n), np.int64), "position_ids": positions, **layout.empty_past()}

    def calibration_feeds(self, loaded: LoadedModel, samples: Iterable[Any], component: str) -> Iterator[Feeds]:
        """One feed per sample: pixels for the vision encoder, prompt ids for embed_tokens, the spliced prefill for the decoder."""
        layout = CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True))
        for sample in samples:
            image = getattr(sample, "image", None)
            if image is None:
                continue
            question = getattr(sample, "question", None) or getattr(sample, "text", None) or DEFAULT_QUESTION
            if component == "vision_encoder":
                yield {"pixel_values": self.encode(loaded, image, question)[1]}
            elif component == "embed_tokens":
                yield {"input_ids": self.encode(loaded, image, question)[0]}
            elif component == "decoder":
                yield self._torch_prefill_feeds(loaded, image, question, layout)

    def latency_feeds(self, loaded: LoadedModel, component: str) -> Feeds:
        """Vision: one image. embed_tokens: one token. decoder: one decode step after an image and a short prompt."""
        rng = np.random.default_rng(0)
        if component == "vision_encoder":
            return {"pixel_values": rng.standard_normal((1, *self.pixel_shape(loaded))).astype(np.float32)}
        if component == "embed_tokens":
            return {"input_ids": np.array([[1]], np.int64)}
        spec = self.generation_spec(loaded.config)
        past = self.image_tokens(loaded) + LATENCY_PROMPT_TOKENS
        feeds: Feeds = {n: (rng.standard_normal((1, spec.kv_heads, past, spec.head_dim)) * 0.1).astype(np.float32) for n in spec.past_names()}
        return {"inputs_embeds": (rng.standard_normal((1, 1, spec.hidden)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, past + 1), np.int64), "position_ids": spec.position_ids(past, 1), **feeds}

    def image_tokens(self, loaded: LoadedModel) -> int:
        """Image tokens per image: ``loaded.image_token_count`` where a caller without the weights set it
        (``edgecompile run`` reads it from the vision graph), else one pass of the torch vision tower."""
        known = getattr(loaded, "image_token_count", None)
        if known is not None:
            return int(known)
        with torch.no_grad():
            return int(self.vision_module(loaded)(torch.zeros(1, *self.pixel_shape(loaded))).shape[1])

    # --- evaluation --------------------------------------------------------------------------------
    def evaluate(self, loaded: LoadedModel, run: ComponentRunner, eval_data: Any, spec: GenerationSpec | None = None) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Greedy answers for every sample: exact-match accuracy (when answers exist), TTFT, decode tokens/s.

        Outputs for comparison with the reference: the first token's logits (drift) and the generated
        tokens (padded with -1; :meth:`compare_outputs` turns them into token agreement). ``spec``:
        the artifact's own generation spec where it differs from the checkpoint's (a token-pruned
        decoder is fed the visual-token mask).
        """
        spec = spec or self.generation_spec(loaded.config)
        from edgecompile.data.eval_metrics import rouge_l, token_f1, vqa_match

        samples = list(eval_data.samples)  # a user eval set's samples open their image only when read
        tokens = np.full((len(samples), EVAL_MAX_NEW_TOKENS), -1, np.int64)
        logits, ttft, rates, correct, answered = [], [], [], 0, 0
        captions: list[tuple[str, str]] = []
        for i, sample in enumerate(progress.track(samples, "evaluate: greedy answers")):
            question = getattr(sample, "question", None) or getattr(sample, "text", None) or DEFAULT_QUESTION
            ids, pixels = self.encode(loaded, sample.image, question)
            result = generate(run, spec, ids, pixels, EVAL_MAX_NEW_TOKENS)
            tokens[i, : len(result.tokens)] = result.tokens
            logits.append(result.first_logits)
            ttft.append(result.time_to_first_token_s * 1000.0)
            if not np.isnan(result.decode_tokens_per_s):
                rates.append(result.decode_tokens_per_s)
            answer, answers, reference = getattr(sample, "answer", None), getattr(sample, "answers", ()), getattr(sample, "reference", None)
            if answer is not None or answers or reference is not None:
                text = loaded.processor.decode(result.tokens, skip_special_tokens=True)
                if answers:  # a user VQA set: VQA answer normalisation, any of the answers
                    answered += 1
                    correct += int(vqa_match(text, answers))
                elif answer is not None:
                    answered += 1
                    correct += int(answer_matches(text, answer))
                if reference is not None:
                    captions.append((text, reference))
        metrics: dict[str, float] = {"generation.ttft_ms": float(np.median(ttft)), "generation.decode_tokens_per_s": float(np.median(rates)) if rates else float("nan")}
        if answered:
            metrics["accuracy"] = correct / answered
        if captions:
            metrics["caption.token_f1"] = float(np.mean([token_f1(g, r) for g, r in captions]))
            rouge = rouge_l([g for g, _ in captions], [r for _, r in captions])
            if rouge is not None:
                metrics["caption.rouge_l"] = rouge
        return metrics, {"decoder/first_token_logits": np.stack(logits), "generated/tokens": tokens}

    def compare_outputs(self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
        """Token agreement of the candidate's greedy tokens with the reference's (positional, over the reference's tokens)."""
        ref, cand = reference.get("generated/tokens"), candidate.get("generated/tokens")
        if ref is None or cand is None:
            return {}
        valid = ref >= 0
        same = (ref == cand) & valid
        prefix = [int(np.argmin(np.append(row, False))) for row in same | ~valid]  # first mismatch within the reference
        return {
            "generation.token_agreement": float(same.sum() / max(valid.sum(), 1)),
            "generation.sequence_match": float(np.mean([bool(np.all(s[v])) for s, v in zip(same, valid, strict=True)])),
            "generation.first_token_agreement": float(np.mean(same[:, 0])),
            "generation.agreeing_prefix_mean": float(np.mean(prefix)),
        }


def answer_matches(generated: str, answer: str) -> bool:
    """Exact match after normalization; a generated answer may run on after the expected words (no EOS yet)."""
    got, want = normalize_answer(generated), normalize_answer(answer)
    return got == want or (bool(want) and re.match(rf"{re.escape(want)}\b", got) is not None)
