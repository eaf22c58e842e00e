"""Greedy generation for a generative VLM compiled as three graphs, on any component runner.

``vision_encoder`` (pixel_values -> image_features), ``embed_tokens`` (input_ids -> inputs_embeds) and
``decoder`` (inputs_embeds, attention_mask, position_ids, past -> logits, present). The image features
are spliced into the prompt's embeddings at the image-token positions (what the HF model does inside
its forward), the prompt is prefilled from an empty cache, then one token at a time is decoded feeding
back the cache. The same code drives the float reference graphs and every compiled artifact, so
validation compares like with like; tokens stream through an iterator (or a callback) as they come.
A runner that offers ``fast_decoder`` (ONNX Runtime CPU, a GroupQueryAttention decoder) is driven
through that instead: the same tokens, with one shared in-place cache and I/O binding
(``runtime.ort_decode``); every other runner takes the generic loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecompile.models.adapter import ComponentRunner

SPEC_FILE = "generation.json"
CACHE_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}


@dataclass(frozen=True)
class GenerationSpec:
    """What the runtime must know about a model beyond its graphs (saved beside them as generation.json)."""

    image_token_id: int
    eos_token_ids: tuple[int, ...]
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    # How position ids are laid out for the decoder. "1d": one position per token, 0..n-1, shape
    # (1, n) (Llama, Qwen2, Mistral, Gemma). "1d_from_1": the same counted from 1 (PaliGemma's
    # positions are 1-indexed). "mrope": Qwen2-VL's multimodal rotary positions, shape (3, 1, n) —
    # (temporal, row, column): text tokens carry their index in all three, the image's tokens the
    # image's start position plus their row / column in ``image_grid`` (merged patches, rows x cols),
    # and the text after an image resumes at start + max(rows, cols). The runtime follows the layout
    # from generation.json without the adapter.
    position_layout: str = "1d"
    image_grid: tuple[int, int] = (0, 0)
    # The decoder's KV cache dtype: "float32", or "int8" where the build quantized the cache
    # (GroupQueryAttention with kv_cache_bit_width=8, plan role kv_cache). Empty caches are made in it.
    cache_dtype: str = "float32"
    # The decoder prunes visual tokens (QUOTA, backends.ort_cpu.token_pruning): it takes a
    # ``visual_token_mask`` input (1 at the prompt's image tokens, zeros at decode steps) and its
    # layers' caches differ in length, so it runs on the generic loop, never the shared-buffer path.
    visual_token_mask: bool = False

    def position_ids(self, start: int, count: int) -> np.ndarray:
        """Position ids of ``count`` text tokens from position index ``start`` (batch 1); for a prompt with an image see :meth:`prompt_position_ids`."""
        offsets = {"1d": 0, "1d_from_1": 1, "mrope": 0}
        if self.position_layout not in offsets:
            raise ValueError(f"generation.json: position_layout: '{self.position_layout}' is not known to this runtime; expected one of {', '.join(offsets)}")
        first = start + offsets[self.position_layout]
        positions = np.arange(first, first + count, dtype=np.int64)[None]
        return np.broadcast_to(positions[None], (3, 1, count)).copy() if self.position_layout == "mrope" else positions

    def prompt_position_ids(self, input_ids: np.ndarray) -> tuple[np.ndarray, int]:
        """(position ids of the prompt, delta): decode step at token index i then takes ``position_ids(i + delta, 1)``."""
        n = input_ids.shape[1]
        if self.position_layout != "mrope":
            return self.position_ids(0, n), 0
        rows, cols = self.image_grid
        ids = input_ids[0]
        out = np.zeros((3, 1, n), np.int64)
        i, current = 0, 0
        while i < n:
            if ids[i] != self.image_token_id:
                out[:, 0, i] = current
                i, current = i + 1, current + 1
                continue
            span = rows * cols
            if span == 0 or i + span > n or not (ids[i : i + span] == self.image_token_id).all():
                raise ValueError(f"the prompt's image-token run at {i} does not hold image_grid {rows}x{cols} = {span} tokens; the processor and generation.json disagree")
            r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            out[0, 0, i : i + span] = current
            out[1, 0, i : i + span] = current + r.reshape(-1)
            out[2, 0, i : i + span] = current + c.reshape(-1)
            i, current = i + span, current + max(rows, cols)
        return out, int(out.max()) + 1 - n

    def past_names(self) -> list[str]:
        return [n for i in range(self.layers) for n in (f"past_key_{i}", f"past_value_{i}")]

    def present_names(self) -> list[str]:
        return [n for i in range(self.layers) for n in (f"present_key_{i}", f"present_value_{i}")]

    def empty_past(self) -> dict[str, np.ndarray]:
        if self.cache_dtype not in CACHE_DTYPES:
            raise ValueError(f"generation.json: cache_dtype: '{self.cache_dtype}' is not known to this runtime; expected one of {', '.join(CACHE_DTYPES)}")
        return {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=CACHE_DTYPES[self.cache_dtype]) for n in self.past_names()}

    def cache_bytes(self, positions: int) -> int:
        """Bytes of the whole KV cache (every layer, keys and values) holding ``positions`` tokens (scales not counted)."""
        return 2 * self.layers * self.kv_heads * positions * self.head_dim * np.dtype(CACHE_DTYPES[self.cache_dtype]).itemsize

    def save(self, directory: Path) -> None:
        (directory / SPEC_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> GenerationSpec:
        data = json.loads((directory / SPEC_FILE).read_text())
        return cls(**{**data, "eos_token_ids": tuple(data["eos_token_ids"]), **({"image_grid": tuple(data["image_grid"])} if "image_grid" in data else {})})


@dataclass
class GenerationResult:
    """Generated token ids and where the time went."""

    tokens: list[int]
    prompt_tokens: int
    time_to_first_token_s: float
    decode_s: float
    first_logits: np.ndarray = field(repr=False)
    stopped_by: str = "length"
    cache_bytes: int | None = None  # the KV cache's bytes: the preallocated buffer (ORT CPU fast path) or the last step's cache

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.tokens) - 1  # the first token comes from prefill
        return steps / self.decode_s if steps > 0 and self.decode_s > 0 else float("nan")


def splice_image_features(input_ids: np.ndarray, embeds: np.ndarray, features: np.ndarray, image_token_id: int) -> np.ndarray:
    """Put the image features at the image-token positions of the prompt's embeddings (batch 1)."""
    positions = np.flatnonzero(input_ids[0] == image_token_id)
    flat = features.reshape(-1, embeds.shape[-1])
    if len(positions) != flat.shape[0]:
        raise ValueError(f"the prompt has {len(positions)} image tokens but the vision encoder gave {flat.shape[0]} features; the processor and the model disagree")
    out = embeds.copy()
    out[0, positions] = flat.astype(out.dtype)
    return out


def _time_step(stats: dict, step: int, logits: np.ndarray, start: float, decode_start: float) -> float:
    """Record time to first token (and the first logits) at step 0, decode time after; the decode clock's start."""
    if step == 0:
        stats["time_to_first_token_s"] = time.perf_counter() - start
        stats["first_logits"] = logits.astype(np.float32)
        return time.perf_counter()
    stats["decode_s"] = time.perf_counter() - decode_start
    return decode_start


def stream_tokens(run: ComponentRunner, spec: GenerationSpec, input_ids: np.ndarray, pixel_values: np.ndarray | None, max_new_tokens: int, stats: dict | None = None) -> Iterator[int]:
    """Yield greedy tokens one by one; stops at an EOS token (yielded) or after ``max_new_tokens``.

    ``stats`` (optional) receives time_to_first_token_s, decode_s, first_logits, prompt_tokens, stopped_by.
    """
    if input_ids.ndim != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: expected shape (1, n), got {input_ids.shape}")
    stats = {} if stats is None else stats
    start = time.perf_counter()
    ids = input_ids.astype(np.int64)
    embeds = run("embed_tokens", {"input_ids": ids})["inputs_embeds"]
    if pixel_values is not None:
        features = run("vision_encoder", {"pixel_values": pixel_values.astype(np.float32)})["image_features"]
        embeds = splice_image_features(ids, embeds, features, spec.image_token_id)
    length = ids.shape[1]
    positions, delta = spec.prompt_position_ids(ids)
    fast = run.fast_decoder(spec.layers, length + max_new_tokens) if hasattr(run, "fast_decoder") and not spec.visual_token_mask else None
    if fast is not None:
        yield from _stream_fast(fast, spec, embeds, positions, delta, max_new_tokens, stats, start)
        return
    pruning = {"visual_token_mask": (ids == spec.image_token_id).astype(np.int64)} if spec.visual_token_mask else {}
    feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, length), np.int64), "position_ids": positions, **pruning, **spec.empty_past()}
    stats.update(prompt_tokens=length, stopped_by="length", decode_s=0.0)
    decode_start = 0.0
    for step in range(max_new_tokens):
        out = run("decoder", feeds)
        logits = out["logits"][0, -1]
        token = int(np.argmax(logits))
        decode_start = _time_step(stats, step, logits, start, decode_start)
        stats["cache_bytes"] = sum(out[q].nbytes for q in spec.present_names())
        yield token
        if token in spec.eos_token_ids:
            stats["stopped_by"] = "eos"
            return
        total = length + step + 1
        feeds = {
            "inputs_embeds": run("embed_tokens", {"input_ids": np.array([[token]], np.int64)})["inputs_embeds"],
            "attention_mask": np.ones((1, total), np.int64),
            "position_ids": spec.position_ids(total - 1 + delta, 1),
            **({"visual_token_mask": np.zeros((1, 1), np.int64)} if spec.visual_token_mask else {}),
            **{p: out[q] for p, q in zip(spec.past_names(), spec.present_names(), strict=True)},
        }


def _stream_fast(decoder, spec: GenerationSpec, embeds: np.ndarray, positions: np.ndarray, delta: int, max_new_tokens: int, stats: dict, start: float) -> Iterator[int]:  # noqa: ANN001 - runtime.ort_decode.OrtDecoder
    """:func:`stream_tokens`' loop on the ORT CPU fast path (shared in-place cache, I/O binding); same tokens, same stats."""
    length = embeds.shape[1]
    stats.update(prompt_tokens=length, stopped_by="length", decode_s=0.0)
    stats["cache_bytes"] = decoder.cache_bytes
    logits = decoder.prefill(embeds, positions)
    decode_start = 0.0
    for step in range(max_new_tokens):
        token = int(np.argmax(logits))
        decode_start = _time_step(stats, step, logits, start, decode_start)
        yield token
        if token in spec.eos_token_ids:
            stats["stopped_by"] = "eos"
            return
        if step + 1 < max_new_tokens:
            logits = decoder.step(token, spec.position_ids(length + step + delta, 1))


def generate(run: ComponentRunner, spec: GenerationSpec, input_ids: np.ndarray, pixel_values: np.ndarray | None, max_new_tokens: int, on_token: Callable[[int], None] | None = None) -> GenerationResult:
    """Greedy decoding to EOS or ``max_new_tokens``; ``on_token`` is called with each token as it is produced."""
    stats: dict = {}
    tokens: list[int] = []
    for token in stream_tokens(run, spec, input_ids, pixel_values, max_new_tokens, stats):
        tokens.append(token)
        if on_token is not None:
            on_token(token)
    if not tokens:
        raise ValueError("max_new_tokens must be at least 1")
    return GenerationResult(tokens, stats["prompt_tokens"], stats["time_to_first_token_s"], stats["decode_s"], stats["first_logits"], stats["stopped_by"], stats.get("cache_bytes"))
