"""Fuse a dynamo-exported Llama-style decoder into ONNX Runtime's contrib ops for fast CPU decode.

torch.export leaves attention, RMSNorm and rotary embeddings as ~80 small ops per layer; at one
token per step their launch cost is as large as the INT4 MatMuls themselves. onnxruntime.transformers'
optimizer only knows TorchScript-era exports (its rotary-attention fusion does not match this graph)
and onnxscript's ort_fusions match its norms but not its rotary or attention (onnxscript_norms says
why), so the norms are onnxscript's and the attention is matched here, on the graph
``decoder_export.DecoderWithCache`` produces:

* RMSNorm, with the residual Add before it -> com.microsoft SkipSimplifiedLayerNormalization, a lone
  one (the first layer's, fed by the embedding) -> ONNX RMSNormalization at opset 23+, else left as
  it was: onnxscript's ort_fusions rules, with our glue for the lone norms (see onnxscript_norms);
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

import onnx
from onnx import helper

from edgecompile.backends.common.graph_tidy import topological_sort
from edgecompile.backends.ort_cpu.decoder_attention import fuse_attention, pack_qkv
from edgecompile.backends.ort_cpu.fusion_graph import FusionGraph, FusionReport
from edgecompile.backends.ort_cpu.onnxscript_norms import fuse_norms

_MS = "com.microsoft"


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
    report = FusionReport()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    fused, report.rms_norms, report.skip_norms = fuse_norms(model, opset)  # a new proto: ``model`` stays as it was
    g = FusionGraph(fused.graph)
    fuse_attention(g, report)
    dead_code_elimination(g)  # the unfused chains still read the projections; pack_qkv wants them gone
    pack_qkv(g, report)
    dead_code_elimination(g)
    if not any(o.domain == _MS for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(_MS, 1))
    return topological_sort(fused), report
