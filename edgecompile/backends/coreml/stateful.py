"""The CoreML decoder with a stateful KV cache: Apple's layout for LLMs on iOS18/macOS15 (coremltools ≥ 8).

Instead of taking the cache as inputs and returning it as outputs every step (copies of the
whole cache through the model's I/O), the cache lives inside the model as two CoreML *states*,
``key_cache`` and ``value_cache`` of fixed shape [layers, 1, kv_heads, L, head_dim]; each call
writes its new keys/values in place at ``write_position`` (``slice_update`` + ``coreml_update_state``
in the ML Program) and attends over all L slots under ``attention_mask``.

Inputs: ``inputs_embeds`` [1, seq, hidden] (seq 1..L-1), ``position_ids`` [1, seq] (rotary positions),
``attention_mask`` [1, L] (1 where a slot holds a token, the new ones included; fixed length) and
``write_position`` [1] int32 (the first slot the new tokens go to). Output: ``logits``. A query at
slot ``write_position + i`` sees slot j iff the mask is 1 there and j <= its own slot (causal).

The torch side (:class:`StatefulDecoder`) is a wrapper over the adapter's language model and
lm_head: the K/V caches are registered buffers written by slice assignment, and HF's attention
layers reach them through :class:`SliceCache` (the ``cache.update`` they call). The 4D additive mask
[1, 1, seq, L] is built in the graph and handed to the model, which passes a 4D mask through
as-is: HF's mask construction (which sizes masks from a growing cache) is bypassed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Additive mask value: exp(-1e4) is 0 in FP32 and FP16, and -1e4 is representable in FP16
# (torch.finfo(float32).min overflows to -inf there).
MASKED = -1.0e4
STATE_NAMES = ("key_cache", "value_cache")
INPUT_NAMES = ("inputs_embeds", "position_ids", "attention_mask", "write_position")


@dataclass(frozen=True)
class StatefulLayout:
    """Shapes of the stateful decoder: the cache is [layers, 1, kv_heads, context, head_dim] per state."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    context: int

    @property
    def state_shape(self) -> tuple[int, int, int, int, int]:
        return (self.layers, 1, self.kv_heads, self.context, self.head_dim)

    def state_bytes(self, itemsize: int = 2) -> int:
        """Bytes of both states (FP16 on device)."""
        return 2 * int(np.prod(self.state_shape)) * itemsize


class SliceCache:
    """The ``cache.update`` HF attention layers call, writing into the wrapper's fixed buffers in place.

    Returns the whole fixed-length cache of the layer; the slots not yet written (zeros) are
    masked out by the additive mask, so they contribute nothing.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, start: Any) -> None:
        self.keys, self.values, self.start = keys, values, start

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.start + key_states.shape[2]
        self.keys[layer_idx, :, :, self.start : end] = key_states
        self.values[layer_idx, :, :, self.start : end] = value_states
        return self.keys[layer_idx], self.values[layer_idx]


class StatefulDecoder(torch.nn.Module):
    """(inputs_embeds, position_ids, attention_mask [1, L], write_position [1]) -> logits; K/V caches as buffers."""

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module, layout: StatefulLayout) -> None:
        super().__init__()
        self.model = language_model
        self.lm_head = lm_head
        self.layout = layout
        self.register_buffer("key_cache", torch.zeros(layout.state_shape), persistent=False)
        self.register_buffer("value_cache", torch.zeros(layout.state_shape), persistent=False)

    def reset(self) -> None:
        """Empty the cache (a new conversation); CoreML's equivalent is a fresh ``model.make_state()``."""
        self.key_cache.zero_()
        self.value_cache.zero_()

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor, write_position: torch.Tensor) -> torch.Tensor:
        seq = inputs_embeds.shape[1]
        context = self.layout.context
        start = write_position[0].item()
        torch._check(start >= 0)
        torch._check(start + seq <= context)
        slots = torch.arange(context, dtype=torch.int32).unsqueeze(0)  # [1, L]
        query_slots = (write_position.to(torch.int32) + torch.arange(seq, dtype=torch.int32)).unsqueeze(1)  # [seq, 1]
        visible = ((slots <= query_slots) & (attention_mask.to(torch.int32) > 0)).to(inputs_embeds.dtype)  # [seq, L]
        additive = ((visible - 1.0) * -MASKED).unsqueeze(0).unsqueeze(0)  # [1, 1, seq, L]: 0 visible, MASKED hidden
        cache = SliceCache(self.key_cache, self.value_cache, start)
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=additive, position_ids=position_ids, cache=cache, use_cache=True, return_dict=True)
        return self.lm_head(out.last_hidden_state)


def stateful_example_inputs(layout: StatefulLayout, seq: int = 5, start: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A chunk of ``seq`` tokens written after ``start`` cached ones (sizes > 1: torch.export specializes 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, seq, layout.hidden, generator=g) * 0.02
    positions = torch.arange(start, start + seq, dtype=torch.int64).view(1, seq)
    mask = torch.zeros(1, layout.context, dtype=torch.int32)
    mask[0, : start + seq] = 1
    return embeds, positions, mask, torch.tensor([start], dtype=torch.int32)


def step_feeds(layout: StatefulLayout, embeds: np.ndarray, positions: np.ndarray, done: int) -> dict[str, np.ndarray]:
    """Inputs of one call that writes ``embeds``' tokens after ``done`` cached ones."""
    seq = embeds.shape[1]
    if done + seq > layout.context:
        raise ValueError(f"decoder: {done} cached + {seq} new tokens exceed the stateful cache's {layout.context} slots (backend_options.context_length)")
    mask = np.zeros((1, layout.context), np.int32)
    mask[0, : done + seq] = 1
    return {"inputs_embeds": embeds.astype(np.float32), "position_ids": positions.astype(np.int32), "attention_mask": mask, "write_position": np.array([done], np.int32)}


def stateful_from_decoder(decoder: torch.nn.Module, layout: StatefulLayout) -> StatefulDecoder:
    """The stateful wrapper over the same language model and lm_head as the exported ``DecoderWithCache``."""
    return StatefulDecoder(decoder.model, decoder.lm_head, layout).eval()


class StatefulCoreMlDecoder:
    """The generation runtime's fast-decoder contract (``prefill`` / ``step`` / ``cache_bytes``) on a stateful ML Program.

    macOS only (``MLModel.predict`` with ``state=``): prefill makes a fresh ``model.make_state()``
    (an empty cache), each step writes one token's keys/values into it in place.
    """

    def __init__(self, model: Any, layout: StatefulLayout, embed: Any) -> None:
        self.model, self.layout, self.embed = model, layout, embed
        self.state: Any = None
        self.length = 0

    @property
    def cache_bytes(self) -> int:
        return self.layout.state_bytes()

    def _logits(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.model.predict(feeds, state=self.state)["logits"], np.float32)[0, -1]

    def prefill(self, inputs_embeds: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        self.state = self.model.make_state()
        logits = self._logits(step_feeds(self.layout, inputs_embeds, position_ids, 0))
        self.length = inputs_embeds.shape[1]
        return logits

    def step(self, token: int, position_ids: np.ndarray) -> np.ndarray:
        embeds = self.embed(np.array([[token]], np.int64))
        logits = self._logits(step_feeds(self.layout, embeds, position_ids, self.length))
        self.length += 1
        return logits


def explicit_call(model: Any, layout: StatefulLayout, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call in the explicit-cache contract (``past_*`` in, ``logits`` + ``present_*`` out) on the stateful model.

    For callers that hand the decoder a cache (validation's latency feeds, the generic loop): the
    past is written into a fresh state, the call appends the new tokens, and the state is read back
    as the present. Slower than :class:`StatefulCoreMlDecoder` (two whole-state copies), same numbers.
    """
    past = int(feeds["past_key_0"].shape[2])
    keys = np.zeros(layout.state_shape, np.float16)
    values = np.zeros(layout.state_shape, np.float16)
    for i in range(layout.layers):
        keys[i, :, :, :past] = feeds[f"past_key_{i}"]
        values[i, :, :, :past] = feeds[f"past_value_{i}"]
    state = model.make_state()
    state.write_state("key_cache", keys)
    state.write_state("value_cache", values)
    embeds = feeds["inputs_embeds"]
    out = {"logits": np.asarray(model.predict(step_feeds(layout, embeds, feeds["position_ids"], past), state=state)["logits"], np.float32)}
    total = past + embeds.shape[1]
    keys, values = (np.asarray(state.read_state(n), np.float32) for n in STATE_NAMES)
    for i in range(layout.layers):
        out[f"present_key_{i}"] = keys[i, :, :, :total]
        out[f"present_value_{i}"] = values[i, :, :, :total]
    return out
