"""Fuse a dynamo-exported Llama-style decoder into ONNX Runtime's contrib ops for fast CPU decode.

torch.export leaves attention, RMSNorm and rotary embeddings as ~80 small ops per layer; at one
token per step their launch cost is as large as the INT4 MatMuls themselves. onnxruntime.transformers'
optimizer only knows TorchScript-era exports (its rotary-attention fusion does not match this graph),
so the rewrite is done here, matching the graph ``decoder_export.DecoderWithCache`` produces:

* RMSNorm (Pow, ReduceMean, Add eps, Sqrt, Reciprocal, Mul, Mul weight), where a residual Add feeds it,
  -> com.microsoft SkipSimplifiedLayerNormalization (the Add's sum is its 4th output). A lone RMSNorm
  (the first layer's, fed by the embedding) becomes ONNX RMSNormalization when the graph's opset has
  it (23+) and is otherwise left as it is: ONNX Runtime registers SimplifiedLayerNormalization only in
  the default domain, where onnx.checker has no schema for it (and refuses it in com.microsoft), so
  fusing it would leave a decoder.onnx no ONNX tool accepts, to save six small ops once per step;
* per layer, rotate-half RoPE on Q and K + causal grouped-query attention over ``past`` concatenated
  with the new K/V -> com.microsoft GroupQueryAttention (do_rotary, BNSH past/present kept as the
  graph's inputs/outputs, so the interface of the decoder does not change);
* where Q, K and V projections are MatMulNBits with the same settings, one packed QKV MatMulNBits
  (rows concatenated; GroupQueryAttention splits packed QKV itself).

MatMul/MatMulNBits nodes keep their names except the packed K/V ones, which disappear into the Q node.
Semantics kept: position_ids are fed to GroupQueryAttention (the rotary uses them, not the cache
length); the attention mask must be all ones up to its length (batch-1 generation, what
``runtime.generate`` feeds): GroupQueryAttention is causal and reads only its length. Callers check
parity against the unfused graph (``fusion_parity``) and keep the unfused graph when it fails.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.backends.common.graph_tidy import topological_sort
from edgecompile.backends.ort_cpu.decoder_attention import fuse_attention, pack_qkv
from edgecompile.backends.ort_cpu.fusion_graph import FusionGraph, FusionReport

_MS = "com.microsoft"
_RMS_NORMALIZATION_OPSET = 23  # ONNX RMSNormalization (float stash, normalized over the last axis)


def _attr(node: onnx.NodeProto, name: str, default=None):  # noqa: ANN001, ANN202
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _scalar(value: np.ndarray | None) -> float | None:
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _other(node: onnx.NodeProto, name: str) -> str:
    return node.input[1] if node.input[0] == name else node.input[0]


def fuse_rms_norms(g: FusionGraph, report: FusionReport, opset: int) -> None:
    """Pow(x,2) -> ReduceMean(-1) -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x) -> Mul(w) => SkipSimplifiedLayerNormalization
    (residual Add before it) or, at ``opset`` >= 23, RMSNormalization; otherwise the chain stays."""
    new_nodes: list[onnx.NodeProto] = []
    for pow_node in [n for n in g.graph.node if n.op_type == "Pow"]:
        x = pow_node.input[0]
        chain = _rms_chain(g, pow_node)
        if chain is None:
            continue
        eps, weight, last = chain
        out = last.output[0]
        add = g.prod(x, "Add")
        residual = add is not None and all(g.const(i) is None for i in add.input) and add.output[0] not in g.outputs
        if residual:
            norm = helper.make_node("SkipSimplifiedLayerNormalization", [add.input[0], add.input[1], weight], [out, "", "", x], name=f"{last.name}_skip_rms", domain=_MS, epsilon=eps)
            g.graph.node.remove(add)
            report.skip_norms += 1
        elif opset >= _RMS_NORMALIZATION_OPSET:
            norm = helper.make_node("RMSNormalization", [x, weight], [out], name=f"{last.name}_rms", axis=-1, epsilon=eps, stash_type=1)
        else:
            continue
        last.output[0] = f"{out}__unfused"
        new_nodes.append(norm)
        report.rms_norms += 1
    g.graph.node.extend(new_nodes)


def _rms_chain(g: FusionGraph, pow_node: onnx.NodeProto) -> tuple[float, str, onnx.NodeProto] | None:
    if _scalar(g.const(pow_node.input[1])) != 2.0:
        return None
    x = pow_node.input[0]
    steps: list[onnx.NodeProto] = [pow_node]
    for op in ("ReduceMean", "Add", "Sqrt", "Reciprocal", "Mul", "Mul"):
        users = g.consumers.get(steps[-1].output[0], [])
        if len(users) != 1 or users[0].op_type != op:
            return None
        steps.append(users[0])
    mean, add_eps, _, _, mul_x, mul_w = steps[1:]
    axes = g.const(mean.input[1]) if len(mean.input) > 1 else np.array(_attr(mean, "axes", []))
    if axes is None or axes.reshape(-1).tolist() != [-1] or _attr(mean, "keepdims", 1) != 1:
        return None
    eps = _scalar(g.const(_other(add_eps, steps[1].output[0])))
    weight = _other(mul_w, mul_x.output[0])
    if eps is None or x not in mul_x.input or g.const(weight) is None:
        return None
    return eps, weight, mul_w


def dead_code_elimination(g: FusionGraph) -> None:
    """Drop nodes none of whose outputs reach a graph output, then unused initializers."""
    live, work, keep_ids = set(g.outputs), list(g.outputs), set()
    while work:
        node = g.producer.get(work.pop())
        if node is not None and id(node) not in keep_ids:
            keep_ids.add(id(node))
            fresh = [i for i in node.input if i and i not in live]
            live.update(fresh)
            work += fresh
    keep = [n for n in g.graph.node if id(n) in keep_ids]
    del g.graph.node[:]
    g.graph.node.extend(keep)
    used = live | {i.name for i in g.graph.input}
    kept_inits = [i for i in g.graph.initializer if i.name in used]
    del g.graph.initializer[:]
    g.graph.initializer.extend(kept_inits)
    g.refresh()


def fuse_decoder(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FusionReport]:
    """Rewrite a copy of ``model``; returns it with a report (unchanged copy when nothing matched)."""
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    report = FusionReport()
    g = FusionGraph(fused.graph)
    fuse_rms_norms(g, report, next((o.version for o in fused.opset_import if o.domain in ("", "ai.onnx")), 0))
    g.refresh()
    fuse_attention(g, report)
    dead_code_elimination(g)  # the unfused chains still read the projections; pack_qkv wants them gone
    pack_qkv(g, report)
    dead_code_elimination(g)
    if not any(o.domain == _MS for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(_MS, 1))
    return topological_sort(fused), report
