"""The KV-cache decoder as the Hexagon NPU runs it: static shapes, a fixed-size cache, two graphs.

HTP graphs have static shapes, so the dynamic decoder (one graph, any sequence and past length)
becomes the layout of Qualcomm's own LLM deployments:

- a fixed context length ``L`` and two graphs over the same weights: **prefill** (a chunk of ``C``
  tokens, past capacity ``L - C``) and **decode** (1 token, past capacity ``L - 1``);
- inputs: ``inputs_embeds [1, c, hidden]``, ``attention_bias [1, 1, c, P + c]`` (additive: 0 where a
  query may look, ``mask_value`` on unused cache slots, padding and the future),
  ``position_cos``/``position_sin [1, c, head_dim]`` (rows of the model's own rotary table, looked
  up on the host: no int64 position ids and no trigonometry on the NPU), and
  ``past_key_<i>``/``past_value_<i> [1, kv_heads, P, head_dim]``;
- outputs: ``logits [1, c, vocab]`` and only the chunk's new ``new_key_<i>``/``new_value_<i>
  [1, kv_heads, c, head_dim]``: the host writes them into its cache (no full-cache copy out).

Why re-export from torch rather than rewrite the dynamic ONNX graph: the dynamic graph builds its
causal mask from an int64 ``attention_mask`` and ``cache_position`` arithmetic (bool/int64 ops
HTP has no fixed-point form for) and computes RoPE from int64 positions (Cos/Sin of angles up to
``L`` rad in 16 bits); re-exporting the same HF decoder layers with an explicit additive mask and
host-side rotary rows gives a graph of MatMul/Softmax/elementwise ops only, and the parity test
checks it against the dynamic float decoder. The price: weight transforms applied to the exported
ONNX (SmoothQuant, GPTQ...) are not seen here, so preflight refuses recipes that name them.

:class:`StaticDecoderRunner` adapts the dynamic feeds of ``edgecompile.runtime.generate`` (past of
any length, any number of new tokens) to these graphs: it copies the past into the fixed cache,
pads the chunk, builds the mask and the rotary rows, and slices the outputs back, so the same
generation loop drives the float reference and the NPU graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecompile.errors import InputError

# Text models whose HF decoder layers take (hidden, attention_mask, position_embeddings, cache)
# and whose model holds ``layers``, ``norm`` and ``rotary_emb``: the static wrapper drives them as is.
SUPPORTED_TEXT_MODELS = ("llama", "mistral", "qwen2", "qwen3")
PREFILL, DECODE = "prefill", "decode"


@dataclass(frozen=True)
class StaticLayout:
    """Shape facts of the static decoder graphs (saved in the artifact's record)."""

    context: int  # L: cache slots, prompt + generated tokens
    chunk: int  # C: tokens per prefill call
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    mask_value: float = -100.0

    def tokens(self, kind: str) -> int:
        return self.chunk if kind == PREFILL else 1

    def past_slots(self, kind: str) -> int:
        return self.context - self.tokens(kind)

    def past_names(self) -> list[str]:
        return [n for i in range(self.layers) for n in (f"past_key_{i}", f"past_value_{i}")]

    def new_names(self) -> list[str]:
        return [n for i in range(self.layers) for n in (f"new_key_{i}", f"new_value_{i}")]

    def input_shapes(self, kind: str) -> dict[str, list[int]]:
        c, p = self.tokens(kind), self.past_slots(kind)
        shapes = {"inputs_embeds": [1, c, self.hidden], "attention_bias": [1, 1, c, p + c], "position_cos": [1, c, self.head_dim], "position_sin": [1, c, self.head_dim]}
        return {**shapes, **{n: [1, self.kv_heads, p, self.head_dim] for n in self.past_names()}}

    def output_shapes(self, kind: str) -> dict[str, list[int]]:
        c = self.tokens(kind)
        return {"logits": [1, c, self.vocab], **{n: [1, self.kv_heads, c, self.head_dim] for n in self.new_names()}}

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "graphs": {k: {"inputs": self.input_shapes(k), "outputs": self.output_shapes(k)} for k in (PREFILL, DECODE)}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StaticLayout:
        return cls(**{k: data[k] for k in ("context", "chunk", "layers", "kv_heads", "head_dim", "hidden", "vocab", "mask_value")})


def text_config_check(config: Any, where: str) -> Any:
    """The decoder's text config, or a clear refusal for a text model the static wrapper cannot drive."""
    text = config.get_text_config(decoder=True)
    model_type = getattr(text, "model_type", "?")
    if model_type not in SUPPORTED_TEXT_MODELS:
        raise InputError(f"{where}: text_config.model_type: '{model_type}' has no static-shape HTP decoder here; expected one of {', '.join(SUPPORTED_TEXT_MODELS)} (Gemma scales its embeddings and PaliGemma uses a prefix-LM mask)")
    return text


def layout_for(text_config: Any, context: int | None, chunk: int | None, mask_value: float) -> StaticLayout:
    """L defaults to the model's max positions, C to half of it (the whole prompt in one call)."""
    from edgecompile.models.decoder_export import CacheLayout

    cache = CacheLayout.from_text_config(text_config)
    limit = int(getattr(text_config, "max_position_embeddings", 0) or 0)
    length = context or limit
    if not length:
        raise InputError("backend_options.context_length: the text config has no max_position_embeddings; set the context length")
    if limit and length > limit:
        raise InputError(f"backend_options.context_length: {length} exceeds the model's max_position_embeddings {limit}")
    step = chunk or max(1, length // 2)
    if not 1 <= step < length:
        raise InputError(f"backend_options.prefill_chunk: {step} must be at least 1 and below the context length {length}")
    return StaticLayout(length, step, cache.layers, cache.kv_heads, cache.head_dim, cache.hidden, cache.vocab, mask_value)


class StaticDecoder(torch.nn.Module):
    """(inputs_embeds, attention_bias, position_cos, position_sin, *past) -> (logits, *new K/V).

    The HF decoder layers run unchanged with eager attention (scores + additive mask -> softmax);
    the cache update concatenates past and new keys, of which the last ``c`` are returned.
    """

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module, layers: int) -> None:
        super().__init__()
        self.model = language_model
        self.lm_head = lm_head
        self.layers = layers

    def forward(self, inputs_embeds: torch.Tensor, attention_bias: torch.Tensor, position_cos: torch.Tensor, position_sin: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache([(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        hidden = inputs_embeds
        for layer in self.model.layers[: self.layers]:
            out = layer(hidden, attention_mask=attention_bias, position_embeddings=(position_cos, position_sin), cache=cache, use_cache=True)
            hidden = out[0] if isinstance(out, tuple) else out
        logits = self.lm_head(self.model.norm(hidden))
        count = inputs_embeds.shape[1]
        new: list[torch.Tensor] = []
        for layer in cache.layers:
            new += [layer.keys[:, :, -count:, :], layer.values[:, :, -count:, :]]
        return (logits, *new)


def rotary_table(language_model: torch.nn.Module, length: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin rows [L, head_dim] from the model's own rotary embedding (its rope type and scaling)."""
    with torch.no_grad():
        probe = torch.zeros(1, length, hidden)
        cos, sin = language_model.rotary_emb(probe, position_ids=torch.arange(length, dtype=torch.int64)[None])
    return cos[0].numpy().astype(np.float32), sin[0].numpy().astype(np.float32)


def export_static_decoder(adapter: Any, loaded: Any, layout: StaticLayout, out_dir: Path, opset: int) -> dict[str, Path]:
    """Export the prefill and decode graphs (float) and the rotary table; return their paths."""
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.export import export_component

    language_model = adapter.language_model(loaded)
    language_model.config._attn_implementation = "eager"  # matmul + additive mask + softmax: what HTP runs
    module = StaticDecoder(language_model, adapter.lm_head(loaded), layout.layers).eval()
    paths: dict[str, Path] = {}
    g = torch.Generator().manual_seed(0)
    for kind in (PREFILL, DECODE):
        shapes = layout.input_shapes(kind)
        example = tuple(torch.randn(*shapes[n], generator=g) * 0.02 for n in shapes)
        spec = ComponentSpec(f"decoder_{kind}", module, example, tuple(shapes), tuple(layout.output_shapes(kind)), {})
        paths[kind] = out_dir / f"decoder_{kind}.float.onnx"
        export_component(spec, paths[kind], opset)
    cos, sin = rotary_table(language_model, layout.context, layout.hidden)
    paths["rotary"] = out_dir / "rotary.npz"
    np.savez(paths["rotary"], cos=cos, sin=sin)
    return paths


GraphRun = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


class StaticDecoderRunner:
    """Runs the dynamic decoder contract of ``generate()`` on the two static graphs.

    Stateless between calls: the caller's past (any length up to the graph's capacity) is copied
    into the fixed cache slots ``[0, P)``, the new tokens go in chunks of ``C`` (prefill graph) or
    one at a time (decode graph), and ``present = concat(past, new)`` comes back in the dynamic
    layout. ``run_graph(kind, feeds)`` executes one graph (a float CPU session or the HTP one);
    ``record`` (optional) sees every static feed, which is how the decode graph is calibrated.
    """

    def __init__(self, layout: StaticLayout, cos: np.ndarray, sin: np.ndarray, run_graph: GraphRun, record: Callable[[str, dict[str, np.ndarray]], None] | None = None) -> None:
        self.layout, self.cos, self.sin, self.run_graph, self.record = layout, cos, sin, run_graph, record

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lay = self.layout
        embeds = feeds["inputs_embeds"]
        if embeds.ndim != 3 or embeds.shape[0] != 1:
            raise InputError(f"decoder: inputs_embeds of shape {list(embeds.shape)}; the HTP decoder runs batch 1, (1, n, {lay.hidden})")
        positions = np.asarray(feeds["position_ids"]).reshape(-1).astype(np.int64)
        past = {n: feeds[n] for n in lay.past_names()}
        done, total = next(iter(past.values())).shape[2], embeds.shape[1]
        if done + total > lay.context or (positions.size and int(positions.max()) >= lay.context):
            raise InputError(f"decoder: {done} cached + {total} new tokens (positions up to {int(positions.max()) if positions.size else 0}) exceed the HTP graphs' static context of {lay.context} tokens (backend_options.context_length)")
        if "attention_mask" in feeds and not np.all(feeds["attention_mask"] == 1):
            raise InputError("decoder: the HTP decoder takes no padding inside the caller's attention_mask (batch 1, all ones)")
        logits = []
        start = 0
        while start < total:
            # One token, or a cache too full for the prefill graph's L - C slots: the decode graph.
            kind = DECODE if total - start == 1 or done > lay.past_slots(PREFILL) else PREFILL
            count = min(lay.tokens(kind), total - start)
            out = self._step(kind, embeds[:, start : start + count], positions[start : start + count], past, done)
            logits.append(out["logits"][:, :count])
            for p, n in zip(lay.past_names(), lay.new_names(), strict=True):
                past[p] = np.concatenate([past[p], out[n][:, :, :count]], axis=2)
            done += count
            start += count
        result = {"logits": np.concatenate(logits, axis=1)}
        for i in range(lay.layers):
            result[f"present_key_{i}"], result[f"present_value_{i}"] = past[f"past_key_{i}"], past[f"past_value_{i}"]
        return result

    def static_feeds(self, kind: str, embeds: np.ndarray, positions: np.ndarray, past: dict[str, np.ndarray], done: int) -> dict[str, np.ndarray]:
        """One graph's feeds: padded chunk, fixed cache with ``done`` valid slots, mask, rotary rows."""
        lay = self.layout
        c, slots, count = lay.tokens(kind), lay.past_slots(kind), embeds.shape[1]
        if done > slots:
            raise InputError(f"decoder: {done} cached tokens exceed the {kind} graph's {slots} cache slots (context {lay.context}, prefill chunk {lay.chunk})")
        chunk = np.zeros((1, c, lay.hidden), np.float32)
        chunk[:, :count] = embeds
        rows = np.concatenate([positions, np.minimum(positions[-1] + 1 + np.arange(c - count), lay.context - 1)]).astype(np.int64)
        bias = np.full((1, 1, c, slots + c), lay.mask_value, np.float32)
        bias[0, 0, :count, :done] = 0.0
        for i in range(c):  # causal within the chunk; a padded query sees only itself (finite softmax, ignored)
            bias[0, 0, i, slots + (np.arange(i + 1) if i < count else np.array([i]))] = 0.0
        static = {"inputs_embeds": chunk, "attention_bias": bias, "position_cos": self.cos[rows][None], "position_sin": self.sin[rows][None]}
        for name, value in past.items():
            cache = np.zeros((1, lay.kv_heads, slots, lay.head_dim), np.float32)
            cache[:, :, :done] = value[:, :, :done]
            static[name] = cache
        return static

    def _step(self, kind: str, embeds: np.ndarray, positions: np.ndarray, past: dict[str, np.ndarray], done: int) -> dict[str, np.ndarray]:
        static = self.static_feeds(kind, embeds, positions, past, done)
        if self.record is not None:
            self.record(kind, static)
        return self.run_graph(kind, static)


def decode_calibration_feeds(runner: StaticDecoderRunner, prefill_feeds: Iterator[dict[str, np.ndarray]], embedding: np.ndarray, steps: int) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """(graph, static feeds) for every prefill and ``steps`` greedy decode steps of each prompt.

    The decode graph's activations depend on a filled cache, so its calibration feeds come from
    running the float graphs greedily from each calibration prompt (what the device will see).
    """
    seen: list[tuple[str, dict[str, np.ndarray]]] = []
    runner.record = lambda kind, feeds: seen.append((kind, feeds))
    for feeds in prefill_feeds:
        out = runner(feeds)
        length = feeds["inputs_embeds"].shape[1]
        for step in range(steps):
            token = int(np.argmax(out["logits"][0, -1]))
            position = length + step
            if position >= runner.layout.context:
                break
            past = {p: out[q] for p, q in zip(runner.layout.past_names(), [f"present_{k}_{i}" for i in range(runner.layout.layers) for k in ("key", "value")], strict=True)}
            out = runner({"inputs_embeds": embedding[[token]][None], "position_ids": np.array([[position]], np.int64), **past})
        yield from seen
        seen.clear()
    runner.record = None
