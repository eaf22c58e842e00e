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

Visual-token pruning (the recipe's ``token_pruning``, seed 003) with static shapes: the prefill is
split after each prune layer into segment graphs ``prefill`` (layers 0..l_1), ``prefill_1``
(l_1+1..l_2), ... whose chunk lengths are fixed by the schedule's k per layer (``C - (N_v - k_l)``
for the reference image-token count N_v). A non-final segment also returns its last layer's
residual stream and post-softmax attention; the host scores the visual tokens on them with
``pruning.score`` (the numpy reference itself), gathers the kept rows, positions and mask, and
feeds the next segment (static_pruning.py). The layers are partitioned, so the segments together
hold one copy of the decoder weights, and the NPU runs only MatMul/Softmax/elementwise ops (no
TopK or data-dependent shapes). Each layer's cache holds exactly its kept tokens; the decode graph
takes one ``attention_bias`` per segment (``attention_bias``, ``attention_bias_1``, ...) because
the segments' caches have different valid lengths. Pruned prefill graphs carry no past: the
prompt's first chunk (with its image) is the first call, later tokens go through the decode graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgecompile.backends.qnn.static_pruning import PROBS, STREAM, first_chunk, pruned_prefill
from edgecompile.errors import InputError

# Text models whose HF decoder layers take (hidden, attention_mask, position_embeddings, cache)
# and whose model holds ``layers``, ``norm`` and ``rotary_emb``: the static wrapper drives them as is.
SUPPORTED_TEXT_MODELS = ("llama", "mistral", "qwen2", "qwen3")
PREFILL, DECODE = "prefill", "decode"
HIDDEN = "hidden_states"  # a later prefill segment's input (its outputs: static_pruning.STREAM, PROBS)


@dataclass(frozen=True)
class StaticLayout:
    """Shape facts of the static decoder graphs (saved in the artifact's record).

    ``prune_layers``/``prune_keep``: the token-pruning schedule (cumulative keep ratio after each
    layer) for ``image_tokens`` reference visual tokens; empty for an unpruned decoder.
    """

    context: int  # L: cache slots, prompt + generated tokens
    chunk: int  # C: tokens per prefill call
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    mask_value: float = -100.0
    heads: int = 0
    prune_layers: tuple[int, ...] = ()
    prune_keep: tuple[float, ...] = ()
    image_tokens: int = 0
    prune_weights: tuple[tuple[str, float], ...] = ()
    residual_bits: int = 4

    # --- graphs -------------------------------------------------------------------------------
    def prefill_kinds(self) -> list[str]:
        """The prefill graphs in execution order: one, or one per segment between prune layers."""
        return [PREFILL] + [f"{PREFILL}_{s}" for s in range(1, len(self.prune_layers) + 1)]

    def kinds(self) -> list[str]:
        return [*self.prefill_kinds(), DECODE]

    def segment_index(self, kind: str) -> int:
        return 0 if kind in (PREFILL, DECODE) else int(kind.rsplit("_", 1)[1])

    def layer_ids(self, kind: str | None = None) -> list[int]:
        """Decoder layers the graph runs: all of them (decode, unpruned prefill) or the segment's."""
        if kind is None or kind == DECODE or not self.prune_layers:
            return list(range(self.layers))
        s = self.segment_index(kind)
        bounds = [-1, *self.prune_layers, self.layers - 1]
        return list(range(bounds[s] + 1, bounds[s + 1] + 1))

    def segment_of_layer(self, layer: int) -> int:
        """Which prefill segment a layer belongs to (0 before the first prune layer's successor)."""
        return sum(1 for p in self.prune_layers if layer > p)

    def drops(self) -> list[int]:
        """Visual tokens dropped before each segment (cumulative), for the reference image-token count."""
        if not self.prune_layers:
            return [0]
        from edgecompile.pruning.allocation import KeepSchedule

        budgets = KeepSchedule(self.prune_layers, self.prune_keep, self.image_tokens).budgets()
        return [0, *(self.image_tokens - k for k in budgets)]

    def produces_logits(self, kind: str) -> bool:
        return kind == DECODE or kind == self.prefill_kinds()[-1]

    def tokens(self, kind: str) -> int:
        if kind == DECODE:
            return 1
        return self.chunk - self.drops()[self.segment_index(kind)]

    def past_slots(self, kind: str) -> int:
        if kind != DECODE and self.prune_layers:
            return 0  # a pruned prefill starts from an empty cache (see the module docstring)
        return self.context - self.tokens(kind)

    def past_names(self, kind: str | None = None) -> list[str]:
        if kind is not None and self.past_slots(kind) == 0:
            return []
        return [n for i in self.layer_ids(kind) for n in (f"past_key_{i}", f"past_value_{i}")]

    def new_names(self, kind: str | None = None) -> list[str]:
        return [n for i in self.layer_ids(kind) for n in (f"new_key_{i}", f"new_value_{i}")]

    def bias_names(self, kind: str) -> list[str]:
        """``attention_bias`` and, for the decode graph of a pruned decoder, one more per later segment."""
        extra = len(self.prune_layers) if kind == DECODE else 0
        return ["attention_bias"] + [f"attention_bias_{s}" for s in range(1, extra + 1)]

    def first_input(self, kind: str) -> str:
        return HIDDEN if self.segment_index(kind) > 0 else "inputs_embeds"

    def input_shapes(self, kind: str) -> dict[str, list[int]]:
        c, p = self.tokens(kind), self.past_slots(kind)
        shapes = {self.first_input(kind): [1, c, self.hidden], "attention_bias": [1, 1, c, p + c], "position_cos": [1, c, self.head_dim], "position_sin": [1, c, self.head_dim]}
        shapes.update({n: [1, self.kv_heads, p, self.head_dim] for n in self.past_names(kind)})
        return {**shapes, **{n: [1, 1, c, p + c] for n in self.bias_names(kind)[1:]}}

    def output_shapes(self, kind: str) -> dict[str, list[int]]:
        c = self.tokens(kind)
        head = {"logits": [1, c, self.vocab]} if self.produces_logits(kind) else {STREAM: [1, c, self.hidden], PROBS: [1, self.heads, c, c]}
        return {**head, **{n: [1, self.kv_heads, c, self.head_dim] for n in self.new_names(kind)}}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["prune_weights"] = dict(self.prune_weights)
        return {**data, "graphs": {k: {"inputs": self.input_shapes(k), "outputs": self.output_shapes(k)} for k in self.kinds()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StaticLayout:
        fields = {k: data[k] for k in ("context", "chunk", "layers", "kv_heads", "head_dim", "hidden", "vocab", "mask_value")}
        if data.get("prune_layers"):
            fields.update(heads=int(data["heads"]), prune_layers=tuple(data["prune_layers"]), prune_keep=tuple(data["prune_keep"]), image_tokens=int(data["image_tokens"]),
                          prune_weights=tuple(sorted(data["prune_weights"].items())), residual_bits=int(data["residual_bits"]))
        return cls(**fields)

    def with_pruning(self, schedule: Any, residual_bits: int) -> StaticLayout:
        """This layout with a token-pruning schedule (``pruning.allocation.KeepSchedule``), checked to fit."""
        n_ref = schedule.reference_visual_tokens
        if not n_ref:
            raise InputError("token_pruning: the schedule has no reference image-token count; the static HTP prefill segments need it to fix their lengths")
        if n_ref > self.chunk:
            raise InputError(f"backend_options.prefill_chunk: {self.chunk} tokens cannot hold the prompt's {n_ref} image tokens; the pruned HTP prefill takes the image in its first chunk")
        last = self.layers - 1
        bad = [layer for layer in schedule.layers if not 0 <= layer < last]
        if bad:
            raise InputError(f"token_pruning: layers {bad}: the static decoder has layers 0..{last} and the last cannot prune")
        weights = tuple(sorted((schedule.inputs.get("weights") or {}).items()))
        return replace(self, prune_layers=tuple(schedule.layers), prune_keep=tuple(schedule.keep_ratios), image_tokens=int(n_ref), prune_weights=weights, residual_bits=int(residual_bits))


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
    return StaticLayout(length, step, cache.layers, cache.kv_heads, cache.head_dim, cache.hidden, cache.vocab, mask_value, heads=int(text_config.num_attention_heads))


class StaticDecoder(torch.nn.Module):
    """One static graph: (hidden, attention_bias, position_cos, position_sin, *past, *segment biases) -> outputs.

    The HF decoder layers of ``layout.layer_ids(kind)`` run unchanged with eager attention (scores +
    additive mask -> softmax); the cache update concatenates past and new keys, of which the last
    ``c`` are returned. A non-final prefill segment returns its residual stream and its last
    layer's attention probabilities (read with a forward hook on that layer's attention) instead of logits.
    """

    def __init__(self, language_model: torch.nn.Module, lm_head: torch.nn.Module, layout: StaticLayout, kind: str = PREFILL) -> None:
        super().__init__()
        self.model = language_model
        self.lm_head = lm_head
        self.layer_ids = layout.layer_ids(kind)
        self.has_past = layout.past_slots(kind) > 0
        self.bias_of = [layout.segment_of_layer(i) if kind == DECODE else 0 for i in self.layer_ids]
        self.final = layout.produces_logits(kind)
        self.empty = (1, layout.kv_heads, 0, layout.head_dim)

    def forward(self, hidden: torch.Tensor, attention_bias: torch.Tensor, position_cos: torch.Tensor, position_sin: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        n = len(self.layer_ids)
        past = rest[: 2 * n] if self.has_past else ()
        biases = (attention_bias, *rest[len(past):])
        empty = hidden.new_zeros(self.empty)
        given = {i: (past[2 * j], past[2 * j + 1]) for j, i in enumerate(self.layer_ids)} if past else {}
        cache = DynamicCache([given.get(i, (empty, empty)) for i in range(self.layer_ids[-1] + 1)])
        captured: list[torch.Tensor] = []
        hook = None
        if not self.final:
            hook = self.model.layers[self.layer_ids[-1]].self_attn.register_forward_hook(lambda _m, _a, out: captured.append(out[1]))
        try:
            for i, bias in zip(self.layer_ids, self.bias_of, strict=True):
                out = self.model.layers[i](hidden, attention_mask=biases[bias], position_embeddings=(position_cos, position_sin), cache=cache, use_cache=True)
                hidden = out[0] if isinstance(out, tuple) else out
        finally:
            if hook is not None:
                hook.remove()
        head = (self.lm_head(self.model.norm(hidden)),) if self.final else (hidden, captured[0])
        count = hidden.shape[1]
        new: list[torch.Tensor] = []
        for i in self.layer_ids:
            new += [cache.layers[i].keys[:, :, -count:, :], cache.layers[i].values[:, :, -count:, :]]
        return (*head, *new)


class _FourInputs(torch.nn.Module):
    """A graph with no past and no extra biases (a pruned prefill segment): torch.export needs a
    signature without ``*rest`` when nothing is passed in it."""

    def __init__(self, inner: StaticDecoder) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, hidden: torch.Tensor, attention_bias: torch.Tensor, position_cos: torch.Tensor, position_sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.inner(hidden, attention_bias, position_cos, position_sin)


def rotary_table(language_model: torch.nn.Module, length: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin rows [L, head_dim] from the model's own rotary embedding (its rope type and scaling)."""
    with torch.no_grad():
        probe = torch.zeros(1, length, hidden)
        cos, sin = language_model.rotary_emb(probe, position_ids=torch.arange(length, dtype=torch.int64)[None])
    return cos[0].numpy().astype(np.float32), sin[0].numpy().astype(np.float32)


def export_static_decoder(adapter: Any, loaded: Any, layout: StaticLayout, out_dir: Path, opset: int) -> dict[str, Path]:
    """Export the prefill graph(s) and the decode graph (float) and the rotary table; return their paths."""
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.export import export_component

    language_model = adapter.language_model(loaded)
    language_model.config._attn_implementation = "eager"  # matmul + additive mask + softmax: what HTP runs
    lm_head = adapter.lm_head(loaded)
    paths: dict[str, Path] = {}
    g = torch.Generator().manual_seed(0)
    for kind in layout.kinds():
        module: torch.nn.Module = StaticDecoder(language_model, lm_head, layout, kind).eval()
        shapes = layout.input_shapes(kind)
        if len(shapes) == 4:
            module = _FourInputs(module).eval()
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
    """Runs the dynamic decoder contract of ``generate()`` on the static graphs.

    Stateless between calls: the caller's past (any length up to the graph's capacity) is copied
    into the fixed cache slots ``[0, P)``, the new tokens go in chunks of ``C`` (prefill graph) or
    one at a time (decode graph), and ``present = concat(past, new)`` comes back in the dynamic
    layout. ``run_graph(kind, feeds)`` executes one graph (a float CPU session or the HTP one);
    ``record`` (optional) sees every static feed, which is how the decode graph is calibrated.
    A token-pruned layout's first call runs the prefill segments with the host-side prune steps
    (static_pruning.py), fed ``visual_token_mask``; its caches then differ in length per segment.
    """

    def __init__(self, layout: StaticLayout, cos: np.ndarray, sin: np.ndarray, run_graph: GraphRun, record: Callable[[str, dict[str, np.ndarray]], None] | None = None) -> None:
        self.layout, self.cos, self.sin, self.run_graph, self.record = layout, cos, sin, run_graph, record
        self.last_kept: list[np.ndarray] = []  # pruned prefill: the kept sequence positions after each prune step

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lay = self.layout
        embeds = feeds["inputs_embeds"]
        if embeds.ndim != 3 or embeds.shape[0] != 1:
            raise InputError(f"decoder: inputs_embeds of shape {list(embeds.shape)}; the HTP decoder runs batch 1, (1, n, {lay.hidden})")
        positions = np.asarray(feeds["position_ids"]).reshape(-1).astype(np.int64)
        past = {n: feeds[n] for n in lay.past_names()}
        done = [int(past[f"past_key_{i}"].shape[2]) for i in range(lay.layers)]
        total = embeds.shape[1]
        if done[0] + total > lay.context or (positions.size and int(positions.max()) >= lay.context):
            raise InputError(f"decoder: {done[0]} cached + {total} new tokens (positions up to {int(positions.max()) if positions.size else 0}) exceed the HTP graphs' static context of {lay.context} tokens (backend_options.context_length)")
        if "attention_mask" in feeds and not np.all(feeds["attention_mask"] == 1):
            raise InputError("decoder: the HTP decoder takes no padding inside the caller's attention_mask (batch 1, all ones)")
        logits = []
        start = 0
        if lay.prune_layers and done[0] == 0 and total > 1:
            visual = np.asarray(feeds.get("visual_token_mask", np.zeros((1, total), np.int64))).reshape(-1)
            if visual.size != total:
                visual = np.zeros(total, np.int64)  # the zeros default of a caller unaware of pruning
            count = first_chunk(lay, visual)
            out, self.last_kept = pruned_prefill(self, embeds[:, :count], positions[:count], visual[:count].astype(bool))
            logits.append(out.pop("logits"))
            for i in range(lay.layers):
                for kv in ("key", "value"):
                    past[f"past_{kv}_{i}"] = np.concatenate([past[f"past_{kv}_{i}"], out[f"new_{kv}_{i}"]], axis=2)
                done[i] = int(past[f"past_key_{i}"].shape[2])
            start = count
        while start < total:
            # One token, a pruned layout, or a cache too full for the prefill graph's L - C slots: the decode graph.
            kind = DECODE if total - start == 1 or lay.prune_layers or done[0] > lay.past_slots(PREFILL) else PREFILL
            count = min(lay.tokens(kind), total - start)
            out = self.step(kind, embeds[:, start : start + count], positions[start : start + count], past, done)
            logits.append(out["logits"][:, :count])
            for p, n in zip(lay.past_names(), lay.new_names(), strict=True):
                past[p] = np.concatenate([past[p], out[n][:, :, :count]], axis=2)
            done = [d + count for d in done]
            start += count
        result = {"logits": np.concatenate(logits, axis=1)}
        for i in range(lay.layers):
            result[f"present_key_{i}"], result[f"present_value_{i}"] = past[f"past_key_{i}"], past[f"past_value_{i}"]
        return result

    def static_feeds(self, kind: str, embeds: np.ndarray, positions: np.ndarray, past: dict[str, np.ndarray], done: int | list[int]) -> dict[str, np.ndarray]:
        """One graph's feeds: padded chunk, fixed cache with ``done`` valid slots (one count, or one per layer), masks, rotary rows."""
        lay = self.layout
        c, slots, count = lay.tokens(kind), lay.past_slots(kind), embeds.shape[1]
        lengths = list(done) if isinstance(done, (list, tuple)) else [int(done)] * lay.layers
        if max(lengths[i] for i in lay.layer_ids(kind)) > slots:
            raise InputError(f"decoder: {max(lengths)} cached tokens exceed the {kind} graph's {slots} cache slots (context {lay.context}, prefill chunk {lay.chunk})")
        if count > c:
            raise InputError(f"decoder: {count} tokens exceed the {kind} graph's static length of {c}")
        chunk = np.zeros((1, c, lay.hidden), np.float32)
        chunk[:, :count] = embeds
        rows = np.concatenate([positions, np.minimum(positions[-1] + 1 + np.arange(c - count), lay.context - 1)]).astype(np.int64)
        static = {lay.first_input(kind): chunk}
        segment_first = [lay.layer_ids(kind)[0]] + [p + 1 for p in lay.prune_layers] if kind == DECODE else [lay.layer_ids(kind)[0]]
        for name, first in zip(lay.bias_names(kind), segment_first, strict=True):
            bias = np.full((1, 1, c, slots + c), lay.mask_value, np.float32)
            bias[0, 0, :count, : lengths[first]] = 0.0
            for i in range(c):  # causal within the chunk; a padded query sees only itself (finite softmax, ignored)
                bias[0, 0, i, slots + (np.arange(i + 1) if i < count else np.array([i]))] = 0.0
            static[name] = bias
        static.update({"position_cos": self.cos[rows][None], "position_sin": self.sin[rows][None]})
        for name in lay.past_names(kind):
            cache = np.zeros((1, lay.kv_heads, slots, lay.head_dim), np.float32)
            n = lengths[int(name.rsplit("_", 1)[1])]
            cache[:, :, :n] = past[name][:, :, :n]
            static[name] = cache
        return static

    def step(self, kind: str, embeds: np.ndarray, positions: np.ndarray, past: dict[str, np.ndarray], done: int | list[int]) -> dict[str, np.ndarray]:
        """Build one graph's static feeds, show them to ``record``, run the graph."""
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
