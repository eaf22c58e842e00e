"""What token pruning buys, measured on the artifact itself: prefill latency, KV-cache memory, FLOPs.

A token-pruned decoder (``backends.ort_cpu.token_pruning``) runs unpruned when it is not fed the
visual-token mask, so the same graph, the same session and the same prompt embeddings give both
sides of each ratio: nothing else differs. Prefill is the decoder's call on the whole prompt from an
empty cache (median of ``runs`` per prompt, mean over prompts); the KV cache is the prefill's present
tensors' bytes; FLOPs are analytic from each layer's sequence length (:func:`prefill_flops`).
Accuracy retention (accuracy over the float reference's) comes from the evaluation validate already runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgecompile.models.adapter import ComponentRunner
from edgecompile.runtime.generate import GenerationSpec, splice_image_features

MASK = "visual_token_mask"


def prefill_flops(lengths: Sequence[int], text_config: Any) -> float:
    """Prefill FLOPs from each layer's sequence length: the linears, causal attention, the LM head over the prompt."""
    h, m = text_config.hidden_size, text_config.intermediate_size
    heads, kv = text_config.num_attention_heads, text_config.num_key_value_heads
    dh = getattr(text_config, "head_dim", None) or h // heads
    linear = 2 * (h * heads * dh + 2 * h * kv * dh + heads * dh * h + 3 * h * m)
    attention = 2 * heads * dh  # QK^T and PV at 2 FLOPs per multiply-add, over n^2 / 2 causal pairs
    return float(sum(linear * n + attention * n * n for n in lengths) + 2 * lengths[-1] * h * text_config.vocab_size)


def prefill_feeds(run: ComponentRunner, spec: GenerationSpec, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The decoder's prefill feeds (spliced embeddings, empty caches, the mask) for (input_ids, pixel_values) prompts."""
    feeds = []
    for ids, pixels in prompts:
        embeds = run("embed_tokens", {"input_ids": ids})["inputs_embeds"]
        features = run("vision_encoder", {"pixel_values": pixels})["image_features"]
        feeds.append({"inputs_embeds": splice_image_features(ids, embeds, features, spec.image_token_id), "attention_mask": np.ones((1, ids.shape[1]), np.int64),
                      "position_ids": spec.prompt_position_ids(ids)[0], MASK: (ids == spec.image_token_id).astype(np.int64), **spec.empty_past()})
    return feeds


def profile_prefill(run: ComponentRunner, feeds: Sequence[dict[str, np.ndarray]], runs: int) -> tuple[float, int, list[int]]:
    """(mean over prompts of the median prefill ms, mean cache bytes, the first prompt's per-layer cache lengths)."""
    times, cache, lengths = [], [], []
    for f in feeds:
        out = run("decoder", f)  # warm-up
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            out = run("decoder", f)
            samples.append((time.perf_counter() - start) * 1000.0)
        times.append(statistics.median(samples))
        keys = sorted((k for k in out if k.startswith("present_key_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        cache.append(sum(out[k].nbytes + out[k.replace("key", "value")].nbytes for k in keys))
        lengths = lengths or [int(out[k].shape[2]) for k in keys]
    return float(np.mean(times)), int(np.mean(cache)), lengths


def pruning_metrics(run: ComponentRunner, spec: GenerationSpec, prompts: Sequence[tuple[np.ndarray, np.ndarray]], text_config: Any, schedule: Any, runs: int = 5) -> dict[str, float]:
    """token_pruning.* of the artifact: pruned (mask fed) against the same decoder unpruned (mask left out)."""
    feeds = prefill_feeds(run, spec, prompts)
    pruned_ms, pruned_cache, pruned_lengths = profile_prefill(run, feeds, runs)
    plain_ms, plain_cache, plain_lengths = profile_prefill(run, [{k: v for k, v in f.items() if k != MASK} for f in feeds], runs)
    n_visual = int(feeds[0][MASK].sum())
    return {
        "token_pruning.kept_visual_fraction": schedule.budgets(n_visual)[-1] / n_visual,
        "token_pruning.prefill_ms": pruned_ms,
        "token_pruning.unpruned_prefill_ms": plain_ms,
        "token_pruning.prefill_latency_ratio": pruned_ms / plain_ms,
        "token_pruning.kv_cache_bytes": float(pruned_cache),
        "token_pruning.kv_cache_ratio": pruned_cache / plain_cache,
        "token_pruning.flops_ratio": prefill_flops(pruned_lengths, text_config) / prefill_flops(plain_lengths, text_config),
    }
