"""QUOTA visual-token pruning executed inside the fused ORT CPU decoder (seed 003, sec. 3.3-3.4).

After each pruning layer ``l`` of a :class:`~edgecompile.pruning.allocation.KeepSchedule`, a scoring
subgraph ranks the visual tokens still alive and only the top ``k_l = ceil(rho_l * N_v)`` of them (plus
every text token) go on to layer ``l + 1``; later layers compute on the shorter sequence and their KV
caches hold exactly the kept tokens. What is rewritten, on the graph ``decoder_fusion`` produced:

* a new graph input ``visual_token_mask`` (int64 ``[1, S]``, 1 at image tokens; zeros at decode steps),
  with a zeros initializer as its default, so a caller that does not feed it runs the unpruned decoder;
* layer ``l``'s post-softmax attention is recomputed from its own Q, present keys and rotary caches
  inside the prune step (see :func:`_attention_probs` for why not GroupQueryAttention's ``qk_output``);
* layer ``l + 1``'s input norm is a SkipSimplifiedLayerNormalization whose fourth output is the
  residual stream: the stream (scored) and the normed output are both gathered with the same index;
* the prune step is an ``If`` on "any visual token left": its then-branch computes the composite score
  of :mod:`edgecompile.pruning.score` in float64 (the same formulas, numpy's percentile interpolation
  and its lerp included, so the kept set equals the numpy reference's on the same tensors), TopK
  (ties to the lower index, as ONNX specifies), and Gathers the hidden states, the visual mask and the
  position ids; the else-branch (decode steps, text-only prompts) passes them through;
* every GroupQueryAttention after a prune step takes ``seqlens_k`` / ``total_sequence_length`` from
  its segment's past length plus current length instead of the shared attention-mask ones, because
  after pruning the layers' caches differ in length;
* every GroupQueryAttention after a prune step gets its rotary from an explicit ``RotaryEmbedding`` on Q
  and K at the gathered (original) position ids, with its own ``do_rotary`` off: at the prompt, ONNX
  Runtime 1.32's CPU kernel ignores ``position_ids`` and rotates at ``past + 0..S-1`` (measured: doubling
  the positions changes no key), which after a prune step would be the compacted positions, not the
  original ones the seed keeps. Decode positions come from ``position_ids`` (the runtime keeps counting
  from the unpruned prompt length), so rotary phases stay those of the original tokens.

Batch 1 and 1-D position ids only (what ``runtime.generate`` feeds); M-RoPE graphs are refused. The
shared in-place cache of ``runtime.ort_decode`` assumes one length for every layer, so a pruned graph
runs on the generic loop (``shares_buffer`` says no for graphs with a ``visual_token_mask`` input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecompile.backends.ort_cpu.fusion_graph import FusionGraph
from edgecompile.pruning.score import METRICS, resolve_weights

VISUAL_MASK = "visual_token_mask"
_MS = "com.microsoft"
_D = TensorProto.DOUBLE
_I64 = TensorProto.INT64
_BRANCH_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT, _I64, _I64, _I64, TensorProto.FLOAT)  # stream, normed, mask, positions, kept index, head-mean attention


@dataclass
class PruningReport:
    """Where the prune steps went: layer -> keep ratio, and the tensors each step reads and writes.

    ``attention_probs`` (the head-mean post-softmax attention ``[1, S, T]``, float32) and ``hidden``
    are the scored tensors, ``kept_index`` the sequence indices that survive (ascending; all of them
    at a decode step): tests and the bench expose them as outputs.
    """

    layers: dict[int, float] = field(default_factory=dict)
    attention_probs: dict[int, str] = field(default_factory=dict)
    hidden: dict[int, str] = field(default_factory=dict)
    kept_index: dict[int, str] = field(default_factory=dict)


def _gqa_by_layer(g: FusionGraph) -> dict[int, onnx.NodeProto]:
    """GroupQueryAttention nodes keyed by the layer index of their ``present_key_i`` output."""
    out = {}
    for n in g.graph.node:
        if n.op_type == "GroupQueryAttention" and len(n.output) > 1 and n.output[1].startswith("present_key_"):
            out[int(n.output[1].rsplit("_", 1)[1])] = n
    return out


def _input_norm(g: FusionGraph, gqa: onnx.NodeProto) -> onnx.NodeProto | None:
    """The SkipSimplifiedLayerNormalization feeding a layer's Q projection (through a bias Add, Qwen2)."""
    t = gqa.input[0]
    for _ in range(3):
        node = g.producer.get(t)
        if node is None:
            return None
        if node.op_type == "SkipSimplifiedLayerNormalization":
            return node
        if node.op_type not in ("MatMulNBits", "MatMul", "Add"):
            return None
        t = node.input[0] if g.const(node.input[0]) is None else node.input[1]
    return None


class _Builder:
    """Nodes for one (sub)graph with unique names under a prefix; constants go to the main graph's initializers.

    Constants as outer-scope initializers rather than Constant nodes inside the If branches: ONNX
    Runtime runs a branch's Constant nodes on every call, and at a few dozen per prune step that
    was a measurable share of the step's cost.
    """

    def __init__(self, prefix: str, initializers) -> None:  # noqa: ANN001 - a GraphProto's repeated initializer field
        self.prefix, self.nodes, self.count, self.initializers = prefix, [], 0, initializers

    def const(self, value: np.ndarray) -> str:
        name = self.fresh("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def fresh(self, tag: str) -> str:
        self.count += 1
        return f"{self.prefix}_{tag}{self.count}"

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs: object) -> str | list[str]:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names


def _percentile(b: _Builder, ascending: str, n: str, q: float) -> str:
    """numpy's ``percentile(method="linear")`` of each row of an ascending ``[M, n]`` float64 matrix: ``[M, 1]``.

    Position ``(n - 1) * q / 100``, its floor and the next index (both the last one at or past the
    end), and numpy's ``_lerp`` (which interpolates from the upper neighbour when the weight is >= 0.5).
    """
    n_1 = b.op("Sub", [n, b.const(np.array(1, np.int64))])
    vi = b.op("Mul", [b.op("Cast", [n_1], to=_D), b.const(np.array(q / 100.0, np.float64))])
    prev = b.op("Floor", [vi])
    gamma = b.op("Sub", [vi, prev])
    above = b.op("GreaterOrEqual", [vi, b.op("Cast", [n_1], to=_D)])
    prev_i = b.op("Unsqueeze", [b.op("Where", [above, n_1, b.op("Cast", [prev], to=_I64)]), b.const(np.array([0], np.int64))])
    next_i = b.op("Min", [b.op("Add", [prev_i, b.const(np.array(1, np.int64))]), n_1])
    lo, hi = b.op("GatherElements", [ascending, _rows_of(b, prev_i, ascending)], axis=1), b.op("GatherElements", [ascending, _rows_of(b, next_i, ascending)], axis=1)
    diff = b.op("Sub", [hi, lo])
    up = b.op("Add", [lo, b.op("Mul", [diff, gamma])])
    down = b.op("Sub", [hi, b.op("Mul", [diff, b.op("Sub", [b.const(np.array(1.0)), gamma])])])
    return b.op("Where", [b.op("GreaterOrEqual", [gamma, b.const(np.array(0.5))]), down, up])


def _rows_of(b: _Builder, index: str, matrix: str) -> str:
    """A ``[M, 1]`` int64 column holding ``index`` (shape [1]) for each of ``matrix``'s M rows."""
    rows = b.op("Shape", [matrix], start=0, end=1)
    return b.op("Expand", [b.op("Unsqueeze", [index, b.const(np.array([0], np.int64))]), b.op("Concat", [rows, b.const(np.array([1], np.int64))], axis=0)])


def _robust_normalize(b: _Builder, metrics: str, n: str) -> str:
    """score.robust_normalize on each row of ``[M, n]``: clip to [p10, p90], rescale by the span; zeros when it is 0."""
    ascending = b.op("TopK", [metrics, b.op("Unsqueeze", [n, b.const(np.array([0], np.int64))])], outputs=2, axis=1, largest=0, sorted=1)[0]
    p10, p90 = _percentile(b, ascending, n, 10.0), _percentile(b, ascending, n, 90.0)
    span = b.op("Sub", [p90, p10])
    clipped = b.op("Min", [b.op("Max", [metrics, p10]), p90])  # np.clip(v, lo, hi) = min(max(v, lo), hi)
    scaled = b.op("Div", [b.op("Sub", [clipped, p10]), span])
    zero = b.const(np.array(0.0))
    return b.op("Where", [b.op("Greater", [span, zero]), scaled, b.op("Mul", [scaled, zero])])


def _l2_rows(b: _Builder, x: str) -> str:
    """||x_i||_2 over the last axis as sqrt(sum(x^2)) (numpy's linalg.norm on rows)."""
    return b.op("Sqrt", [b.op("ReduceSum", [b.op("Mul", [x, x]), b.const(np.array([-1], np.int64))], keepdims=0)])


def _residual(b: _Builder, hv: str, bits: int) -> str:
    """||h - Q(h)|| with score.fake_quantize_per_token's symmetric per-row quantizer."""
    qmax = float(2 ** (bits - 1) - 1)
    amax = b.op("ReduceMax", [b.op("Abs", [hv]), b.const(np.array([-1], np.int64))], keepdims=1)
    scale = b.op("Div", [amax, b.const(np.array(qmax))])
    positive = b.op("Greater", [scale, b.const(np.array(0.0))])
    safe = b.op("Where", [positive, scale, b.const(np.array(1.0))])
    q = b.op("Mul", [b.op("Clip", [b.op("Round", [b.op("Div", [hv, safe])]), b.const(np.array(-qmax)), b.const(np.array(qmax))]), safe])
    q = b.op("Where", [positive, q, b.const(np.array(0.0))])
    return _l2_rows(b, b.op("Sub", [hv, q]))


def _prune_branch(prefix: str, probs: str, prelude: list[onnx.NodeProto], hidden: str, normed: str, vmask: str, positions: str, n_ref: str, ratio: float,
                  weights: Mapping[str, float], bits: int, initializers, replay: str | None = None) -> tuple[onnx.GraphProto, list[str]]:  # noqa: ANN001
    """The then-branch: score the visual tokens, keep the top k, gather the residual stream, its norm, mask, positions.

    The norm is per token, so gathering the fused norm's output is exactly the norm of the gathered
    stream: nothing is recomputed, and a keep ratio of 1.0 gives the unpruned graph's outputs bit for bit.
    """
    b = _Builder(f"{prefix}_then", initializers)
    b.nodes.extend(prelude)  # the attention probabilities: only computed where the tokens are scored
    axis0 = b.const(np.array([0], np.int64))
    mask = b.op("Squeeze", [vmask, axis0])  # [S] int64
    visual = b.op("Cast", [mask], to=TensorProto.BOOL)
    vidx = b.op("Squeeze", [b.op("NonZero", [visual]), axis0])  # [Nv], ascending
    n_v = b.op("Squeeze", [b.op("Shape", [vidx]), axis0])
    # The head mean first, in float32 and as a matrix product (the scores' one float32 reduction), and
    # the query means as matrix products too: gathering, casting and reducing the [heads, S, T]
    # probabilities element by element was most of a prune step's cost. ``head_mean`` is what is scored.
    heads = b.op("Shape", [probs], start=1, end=2)
    flat = b.op("Reshape", [b.op("Squeeze", [probs, axis0]), b.op("Concat", [heads, b.const(np.array([-1], np.int64))], axis=0)])  # [H, S*T]
    per_head = b.op("Div", [b.op("ConstantOfShape", [b.op("Concat", [b.const(np.array([1], np.int64)), heads], axis=0)], value=numpy_helper.from_array(np.array([1.0], np.float32))),
                            b.op("Cast", [heads], to=TensorProto.FLOAT)])  # [1, H] of 1/H
    s_len = b.op("Shape", [probs], start=2, end=3)
    t_len = b.op("Shape", [probs], start=3, end=4)
    head_mean = b.op("Reshape", [b.op("MatMul", [per_head, flat]), b.op("Concat", [b.const(np.array([1], np.int64)), s_len, t_len], axis=0)])  # [1, S, T]
    attn = b.op("Cast", [b.op("Squeeze", [head_mean, axis0])], to=_D)  # [S, T] float64
    columns = b.op("Add", [vidx, b.op("Squeeze", [b.op("Sub", [t_len, s_len]), axis0])])  # the visual tokens' key columns
    # text queries: non-visual tokens after the first visual one; all non-visual ones when there are none
    text = b.op("Not", [visual])
    first = b.op("Gather", [vidx, b.const(np.array(0, np.int64))])
    arange = b.op("Range", [b.const(np.array(0, np.int64)), b.op("Squeeze", [s_len, axis0]), b.const(np.array(1, np.int64))])
    after = b.op("And", [text, b.op("Greater", [arange, first])])
    after_f, text_f = b.op("Cast", [after], to=_D), b.op("Cast", [text], to=_D)
    any_after = b.op("Greater", [b.op("ReduceSum", [after_f], keepdims=0), b.const(np.array(0.0))])
    queries = b.op("Where", [any_after, after_f, text_f])
    count = b.op("ReduceSum", [queries], keepdims=0)
    # mean over the chosen queries of attn[i, j] = (mask . attn)[j] / count; zero when there are no queries
    inter_all = b.op("Squeeze", [b.op("MatMul", [b.op("Unsqueeze", [queries, axis0]), attn]), axis0])  # [T]
    safe_count = b.op("Max", [count, b.const(np.array(1.0))])
    inter = b.op("Gather", [b.op("Div", [inter_all, safe_count]), columns])
    intra_all = b.op("Squeeze", [b.op("MatMul", [b.op("Unsqueeze", [b.op("Cast", [visual], to=_D), axis0]), attn]), axis0])
    intra = b.op("Gather", [b.op("Div", [intra_all, b.op("Cast", [n_v], to=_D)]), columns])
    hv = b.op("Gather", [b.op("Cast", [b.op("Squeeze", [hidden, axis0])], to=_D), vidx], axis=0)  # [Nv, D]
    metrics = {"inter_modal": inter, "intra_visual": intra, "magnitude": _l2_rows(b, hv), "residual": _residual(b, hv, bits)}
    normalized = _robust_normalize(b, b.op("Concat", [b.op("Unsqueeze", [metrics[m], axis0]) for m in METRICS], axis=0), n_v)  # [4, Nv]
    total = None
    for i, name in enumerate(METRICS):  # summed in METRICS order, like the numpy reference
        row = b.op("Gather", [normalized, b.const(np.array(i, np.int64))], axis=0)
        term = b.op("Mul", [row, b.const(np.array(float(weights[name])))])
        total = term if total is None else b.op("Add", [total, term])
    # k = min(max(ceil(round(rho * N_ref, 9)), 1), N_ref), N_ref the prompt's visual tokens (KeepSchedule.budgets)
    scaled = b.op("Mul", [b.op("Cast", [n_ref], to=_D), b.const(np.array(ratio, np.float64))])
    rounded = b.op("Div", [b.op("Round", [b.op("Mul", [scaled, b.const(np.array(1e9))])]), b.const(np.array(1e9))])
    k = b.op("Cast", [b.op("Ceil", [rounded])], to=_I64)
    k = b.op("Min", [b.op("Max", [k, b.const(np.array(1, np.int64))]), n_ref, n_v])
    top = b.op("TopK", [total, b.op("Unsqueeze", [k, axis0])], outputs=2, largest=1, sorted=1)[1]
    kept_pos = b.op("Gather", [vidx, top])  # sequence positions of the kept visual tokens (any order)
    keep = b.op("ScatterElements", [b.op("Cast", [text], to=_I64), kept_pos, b.op("Expand", [b.const(np.array(1, np.int64)), b.op("Shape", [kept_pos])])], axis=0)
    index = b.op("Squeeze", [b.op("NonZero", [b.op("Cast", [keep], to=TensorProto.BOOL)]), axis0])  # ascending
    if replay:
        index = replay  # the scores above go unused (ONNX Runtime drops them): the kept set comes from outside
    outs = [*(b.op("Gather", [t, index], axis=1) for t in (hidden, normed, vmask, positions)), b.op("Identity", [index]), b.op("Identity", [head_mean])]
    outputs = [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, _BRANCH_TYPES, strict=True)]
    return helper.make_graph(b.nodes, f"{prefix}_then", [], outputs), outs


def _identity_branch(prefix: str, names: Sequence[str], initializers) -> tuple[onnx.GraphProto, list[str]]:  # noqa: ANN001
    """The else-branch (no visual token left, e.g. a decode step): everything passes, every index is kept."""
    b = _Builder(f"{prefix}_else", initializers)
    length = b.op("Squeeze", [b.op("Shape", [names[0]], start=1, end=2), b.const(np.array([0], np.int64))])
    outs = [*(b.op("Identity", [n]) for n in names), b.op("Range", [b.const(np.array(0, np.int64)), length, b.const(np.array(1, np.int64))]),
            b.op("Identity", [b.const(np.zeros((0,), np.float32))])]  # no probabilities: nothing was scored
    outputs = [helper.make_tensor_value_info(o, t, None) for o, t in zip(outs, _BRANCH_TYPES, strict=True)]
    return helper.make_graph(b.nodes, f"{prefix}_else", [], outputs), outs


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _explicit_rotary(g: FusionGraph, gqa: onnx.NodeProto, layer: int) -> None:
    """Rotate this layer's Q and K outside GroupQueryAttention, at the position ids it is fed (see the module doc).

    The packed QKV (when packed) is split into Q, K, V; ``com.microsoft.RotaryEmbedding`` (half-split,
    the caches GroupQueryAttention was given) rotates Q and K; the attention takes them with
    ``do_rotary=0``. Its cos/sin inputs stay wired (the scoring prelude reads them).
    """
    heads, kv_heads = int(_attr(gqa, "num_heads")), int(_attr(gqa, "kv_num_heads"))
    if int(_attr(gqa, "do_rotary", 0)) != 1 or int(_attr(gqa, "rotary_interleaved", 0)) != 0:
        raise ValueError(f"token pruning: {gqa.name}: expected do_rotary=1 with half-split rotary (the fusion's layout)")
    head_dim = _head_dim(g, gqa)
    b = _Builder(f"prune_rope_{layer}", g.graph.initializer)
    q, k, v = gqa.input[0], gqa.input[1], gqa.input[2]
    if not k:  # packed [1, S, (H + 2 KV) * Dh]
        axis2 = b.const(np.array([2], np.int64))
        bounds = np.cumsum([0, heads * head_dim, kv_heads * head_dim, kv_heads * head_dim])
        q, k, v = (b.op("Slice", [gqa.input[0], b.const(bounds[i : i + 1]), b.const(bounds[i + 1 : i + 2]), axis2]) for i in range(3))
    cos, sin, positions = gqa.input[7], gqa.input[8], gqa.input[9]
    rq = b.fresh("q")
    rk = b.fresh("k")
    b.nodes.append(helper.make_node("RotaryEmbedding", [q, positions, cos, sin], [rq], name=rq, domain=_MS, interleaved=0, num_heads=heads))
    b.nodes.append(helper.make_node("RotaryEmbedding", [k, positions, cos, sin], [rk], name=rk, domain=_MS, interleaved=0, num_heads=kv_heads))
    g.graph.node.extend(b.nodes)
    gqa.input[0], gqa.input[1], gqa.input[2] = rq, rk, v
    for a in gqa.attribute:
        if a.name == "do_rotary":
            a.i = 0


def _attention_probs(g: FusionGraph, gqa: onnx.NodeProto, probs: str) -> list[onnx.NodeProto]:
    """Nodes recomputing a layer's post-softmax attention ``[1, heads, S, T]`` from its GroupQueryAttention's tensors.

    GroupQueryAttention can return its probabilities (``qk_output=2``), but asking for them moves it
    off its fused kernel and changes its output in the last bits (measured: 0.008 max on logits), so a
    keep ratio of 1.0 would not reproduce the unpruned graph. The scores are recomputed instead from the
    layer's own tensors: Q (the packed QKV's first ``heads * head_dim`` columns, bias included), the
    rotary half-split rotation with the layer's cos/sin caches at its position ids, K from
    ``present_key`` (already rotated), the layer's scale, a causal mask over the cached + current keys.
    Float32, like the attention. The nodes go into the prune step's then-branch: computed at prefill
    only, never at a decode step.
    """
    heads, kv_heads = int(_attr(gqa, "num_heads")), int(_attr(gqa, "kv_num_heads"))
    scale, packed = float(_attr(gqa, "scale", 0.0)), not gqa.input[1]
    pre_rotated = int(_attr(gqa, "do_rotary", 0)) == 0 and g.producer.get(gqa.input[0]) is not None and g.producer[gqa.input[0]].op_type == "RotaryEmbedding"
    if not pre_rotated and (int(_attr(gqa, "do_rotary", 0)) != 1 or int(_attr(gqa, "rotary_interleaved", 0)) != 0):
        raise ValueError(f"token pruning: {gqa.name}: expected do_rotary=1 with half-split rotary (the fusion's layout)")
    head_dim = _head_dim(g, gqa)
    p = f"{probs}_"
    b = _Builder(p, g.graph.initializer)
    axis0, axis2, axis3 = (b.const(np.array([a], np.int64)) for a in (0, 2, 3))
    q = gqa.input[0]
    if packed:
        q = b.op("Slice", [q, b.const(np.array([0], np.int64)), b.const(np.array([heads * head_dim], np.int64)), axis2])
    q = b.op("Transpose", [b.op("Reshape", [q, b.const(np.array([1, -1, heads, head_dim], np.int64))])], perm=[0, 2, 1, 3])
    if pre_rotated:  # a layer after an earlier prune step: Q arrives rotated at its original positions
        rotated = q
    else:
        positions = b.op("Squeeze", [gqa.input[9], axis0])
        c = b.op("Gather", [gqa.input[7], positions])  # [S, head_dim / 2]
        s = b.op("Gather", [gqa.input[8], positions])
        half = head_dim // 2
        q1 = b.op("Slice", [q, b.const(np.array([0], np.int64)), b.const(np.array([half], np.int64)), axis3])
        q2 = b.op("Slice", [q, b.const(np.array([half], np.int64)), b.const(np.array([head_dim], np.int64)), axis3])
        rotated = b.op("Concat", [b.op("Sub", [b.op("Mul", [q1, c]), b.op("Mul", [q2, s])]), b.op("Add", [b.op("Mul", [q2, c]), b.op("Mul", [q1, s])])], axis=3)
    grouped = b.op("Reshape", [rotated, b.const(np.array([1, kv_heads, heads // kv_heads, -1, head_dim], np.int64))])
    keys = b.op("Unsqueeze", [b.op("Transpose", [gqa.output[1]], perm=[0, 1, 3, 2]), axis2])  # [1, KV, 1, Dh, T]
    scores = b.op("Mul", [b.op("MatMul", [grouped, keys]), b.const(np.array(scale or 1.0 / np.sqrt(head_dim), np.float32))])
    scores = b.op("Reshape", [scores, b.op("Concat", [b.const(np.array([1, heads], np.int64)), b.op("Shape", [scores], start=3)], axis=0)])
    t_len = b.op("Shape", [gqa.output[1]], start=2, end=3)
    s_len = b.op("Shape", [q], start=2, end=3)
    rows = b.op("Unsqueeze", [b.op("Range", [b.op("Squeeze", [b.op("Sub", [t_len, s_len])]), b.op("Squeeze", [t_len]), b.const(np.array(1, np.int64))]), b.const(np.array([1], np.int64))])
    cols = b.op("Range", [b.const(np.array(0, np.int64)), b.op("Squeeze", [t_len]), b.const(np.array(1, np.int64))])
    masked = b.op("Where", [b.op("Greater", [cols, rows]), b.const(np.array(-np.inf, np.float32)), scores])
    b.nodes.append(helper.make_node("Softmax", [masked], [probs], name=probs, axis=-1))
    return b.nodes


def _head_dim(g: FusionGraph, gqa: onnx.NodeProto) -> int:
    """The head size, from the static last dimension of the layer's ``past_key`` graph input."""
    past = next((i for i in g.graph.input if i.name == gqa.input[3]), None)
    dims = [d.dim_value for d in past.type.tensor_type.shape.dim] if past is not None else []
    if len(dims) != 4 or dims[3] <= 0:
        raise ValueError(f"token pruning: {gqa.name}: past key input '{gqa.input[3]}' has no static head size")
    return dims[3]


def _own_lengths(g: FusionGraph, gqa: onnx.NodeProto, layer: int) -> tuple[str, str]:
    """seqlens_k / total_sequence_length from this layer's own past length + current length (batch 1).

    Computed once per segment (the first layer after a prune step) and shared by the layers up to
    the next one: they all hold the same tokens.
    """
    p = f"prune_len_{layer}"
    nodes = [
        helper.make_node("Shape", [gqa.input[3]], [f"{p}_past"], start=2, end=3),
        helper.make_node("Shape", [gqa.input[0]], [f"{p}_cur"], start=1, end=2),
        helper.make_node("Add", [f"{p}_past", f"{p}_cur"], [f"{p}_total64"]),
        helper.make_node("Sub", [f"{p}_total64", "prune_one"], [f"{p}_seqlens64"]),
        helper.make_node("Cast", [f"{p}_seqlens64"], [f"{p}_seqlens"], to=TensorProto.INT32),
        helper.make_node("Squeeze", [f"{p}_total64"], [f"{p}_totals64"]),
        helper.make_node("Cast", [f"{p}_totals64"], [f"{p}_total"], to=TensorProto.INT32),
    ]
    for n in nodes:
        n.name = n.output[0]
    g.graph.node.extend(nodes)
    return f"{p}_seqlens", f"{p}_total"


def insert_token_pruning(model: onnx.ModelProto, layers: Mapping[int, float], weights: Mapping[str, float] | None = None,
                         residual_bits: int = 4, replay_kept: bool = False) -> tuple[onnx.ModelProto, PruningReport]:
    """A copy of the fused decoder with a prune step after each ``layers`` entry (layer -> cumulative keep ratio).

    ``replay_kept`` is an experiment's hook, not a deployment mode: each prune step then gathers the
    indices given in a graph input ``prune_kept_index_<layer>`` (int64 [kept], ascending, into the
    sequence that layer saw; fed at prefill, unused at decode) instead of its own top-k. The
    stage-wise prune->quant baseline uses it to run the float model's kept sets on the quantized decoder.

    Raises ValueError naming what does not fit: a layer without GroupQueryAttention, the last layer
    (nothing after it to save), M-RoPE position ids, ratios that increase.
    """
    from edgecompile.backends.common.graph_tidy import topological_sort

    w = resolve_weights(weights)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = FusionGraph(out.graph)
    gqas = _gqa_by_layer(g)
    if not gqas:
        raise ValueError("token pruning: the decoder has no GroupQueryAttention (the ORT CPU fusion did not apply); nothing to prune in")
    positions = gqas[min(gqas)].input[9] if len(gqas[min(gqas)].input) > 9 else ""
    pos_info = next((i for i in out.graph.input if i.name == positions), None)
    if pos_info is None or len(pos_info.type.tensor_type.shape.dim) != 2:
        raise ValueError("token pruning: needs 1-D position_ids [batch, seq] fed to GroupQueryAttention (M-RoPE decoders are not supported)")
    past0 = next((i for i in out.graph.input if i.name == gqas[min(gqas)].input[3]), None)
    if past0 is None or past0.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ValueError("token pruning: needs a float32 KV cache (the scores read the layer's present keys); this decoder's cache is quantized")
    ordered = sorted(layers.items())
    ratios = [r for _, r in ordered]
    if any(b2 > a for a, b2 in zip(ratios, ratios[1:])):
        raise ValueError(f"token pruning: keep ratios must not increase with depth, got {dict(ordered)}")
    for layer, ratio in ordered:
        if layer not in gqas or layer + 1 not in gqas:
            raise ValueError(f"token pruning: layer {layer}: expected a layer with a following layer (decoder layers 0..{max(gqas)}; the last cannot prune)")
        if not 0 < ratio <= 1:
            raise ValueError(f"token pruning: layer {layer}: keep ratio {ratio} not in (0, 1]")
    out.graph.input.append(helper.make_tensor_value_info(VISUAL_MASK, _I64, ["batch", "sequence"]))
    # An overridable initializer: a caller that does not feed the mask (tensor comparisons, latency
    # feeds, any runtime unaware of pruning) gets zeros, i.e. the unpruned decoder exactly.
    out.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 1), np.int64), VISUAL_MASK))
    out.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "prune_one"))
    out.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "prune_axis1"))
    g.graph.node.extend([
        helper.make_node("ReduceSum", [VISUAL_MASK, "prune_axis1"], ["prune_nref_b"], name="prune_nref_b", keepdims=0),
        helper.make_node("ReduceMax", ["prune_nref_b"], ["prune_nref"], name="prune_nref", keepdims=0),
    ])
    # Shapes recorded before pruning name one sequence length for every layer; after it they are wrong
    # (and make ONNX Runtime's memory planner warn and re-plan on every run): let the runtime infer them.
    del out.graph.value_info[:]
    report = PruningReport()
    vmask, pos, lengths, pruned_before = VISUAL_MASK, positions, None, False
    for layer in sorted(gqas):
        gqa = gqas[layer]
        if len(gqa.input) > 9:
            gqa.input[9] = pos
        if pruned_before:  # up to the first prune step the attention mask's lengths are right
            lengths = _own_lengths(g, gqa, layer)
            pruned_before = False
        if lengths is not None:
            gqa.input[5], gqa.input[6] = lengths
        if pos != positions and any(r < 1.0 for lay, r in layers.items() if lay < layer):
            _explicit_rotary(g, gqa, layer)  # gathered positions: GroupQueryAttention's own rotary would not read them
            g.refresh()
        if layer not in layers:
            continue
        pruned_before = True
        ratio, prefix = float(layers[layer]), f"prune_{layer}"
        probs = f"{prefix}_probs"
        prelude = _attention_probs(g, gqa, probs)
        norm = _input_norm(g, gqas[layer + 1])
        if norm is None or len(norm.output) < 4 or not norm.output[3]:
            raise ValueError(f"token pruning: layer {layer + 1}'s input norm is not a SkipSimplifiedLayerNormalization with its residual output; cannot find the residual stream to prune")
        normed, stream = norm.output[0], norm.output[3]
        replay = None
        if replay_kept:
            replay = f"prune_kept_index_{layer}"
            out.graph.input.append(helper.make_tensor_value_info(replay, _I64, [f"kept_{layer}"]))
        then_graph, _ = _prune_branch(prefix, probs, prelude, stream, normed, vmask, pos, "prune_nref", ratio, w, residual_bits, out.graph.initializer, replay)
        else_graph, _ = _identity_branch(prefix, [stream, normed, vmask, pos], out.graph.initializer)
        any_visual = f"{prefix}_any_visual"
        kept = [f"{prefix}_hidden", f"{prefix}_normed", f"{prefix}_mask", f"{prefix}_positions", f"{prefix}_kept_index", f"{prefix}_attn_probs"]
        users = {name: list(g.consumers.get(name, [])) for name in (normed, stream)}
        if normed in g.outputs or stream in g.outputs:
            raise ValueError(f"token pruning: layer {layer + 1}'s input norm output is a graph output; not a decoder layout this pass knows")
        g.graph.node.extend([
            helper.make_node("ReduceMax", [vmask], [f"{prefix}_vmax"], name=f"{prefix}_vmax", keepdims=0),
            helper.make_node("Cast", [f"{prefix}_vmax"], [any_visual], name=any_visual, to=TensorProto.BOOL),
            helper.make_node("If", [any_visual], kept, name=f"{prefix}_if", then_branch=then_graph, else_branch=else_graph),
        ])
        for name, new_name in ((stream, kept[0]), (normed, kept[1])):
            for user in users[name]:
                for i, used in enumerate(user.input):
                    if used == name:
                        user.input[i] = new_name
        vmask, pos = kept[2], kept[3]
        report.layers[layer], report.attention_probs[layer], report.hidden[layer], report.kept_index[layer] = ratio, kept[5], stream, kept[4]
        g.refresh()
    _drop_unused_constants(out.graph)
    return topological_sort(out), report


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    """The prune steps' constants that no node (in the graph or its branches) reads."""
    used: set[str] = set()

    def collect(g: onnx.GraphProto) -> None:
        for node in g.node:
            used.update(node.input)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    collect(attr.g)

    collect(graph)
    stale = [t for t in graph.initializer if t.name.startswith("prune_") and t.name not in used]
    for t in stale:
        graph.initializer.remove(t)
