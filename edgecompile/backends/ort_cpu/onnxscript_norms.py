"""RMSNorm and residual-plus-RMSNorm of an exported decoder -> ONNX Runtime's norm ops, by onnxscript's rewriter.

From onnxscript (``onnxscript.rewriter.ort_fusions``, maintained with ONNX Runtime):

* ``fuse_rms_normalization``: Pow(x, 2) -> ReduceMean(-1) -> Add(eps) -> Sqrt -> Reciprocal -> Mul(x)
  -> Mul(w), with or without the Casts of mixed-precision exports -> SimplifiedLayerNormalization;
* ``fuse_skip_rms_normalization``: a residual Add feeding one -> com.microsoft
  SkipSimplifiedLayerNormalization (the sum is its 4th output). Both rules check dtypes and [B, S, D]
  shapes: the dynamo export's value_info has them and our quantizers keep it, and onnx_ir's
  ShapeInferencePass (weights left out, so any size) fills in standard ops; a graph that lost them
  behind contrib ops keeps those norms unfused (an INT4 decoder stripped of value_info fuses none),
  which costs speed, not parity.

Gemma's (1 + w) weight is folded into one initializer by the exporter, so its norms match too.

Ours (one rule, below): the norms no residual Add feeds (the first layer's, on the embeddings) stay
default-domain SimplifiedLayerNormalization after onnxscript. ONNX Runtime registers that op only in
the default domain, where onnx.checker has no schema for it, so a decoder.onnx holding it is refused
by every ONNX tool. Those become ONNX RMSNormalization where the opset has it (23+), and otherwise
are written back as the ops they were (six small ops once per step, not worth an invalid file).

Not taken from onnxscript, and why (measured on our Llama/Qwen2/Mistral/Gemma exports, see
bench/fusion_onnxscript.py): ``fuse_rotary_embedding`` matches, but its RotaryEmbedding lands in a
private function domain that only ``fuse_cos_sin_cache`` turns into ORT's op, and that rule does not
match our exports (positions x inv_freq is a Mul there, the rule wants a MatMul), so ``optimize_for_ort``
inlines the functions back; ``fuse_gqa`` matches no layer, since its pattern starts from that
com.microsoft RotaryEmbedding (``fuse_sdpa`` found one layer of two). Our GroupQueryAttention fusion
(decoder_attention) takes the rotary in itself (do_rotary), so the rope chains must stay for it to
match; it runs on this module's output unchanged.

The round trip through onnx_ir keeps tensor data in memory (weights loaded from external data stay
loaded), and copies each initializer once when it writes the proto back.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions.rms_normalization import fuse_rms_normalization
from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_rms_normalization

RMS_NORMALIZATION_OPSET = 23  # ONNX RMSNormalization (float stash, normalized over the last axis)
_FLOAT = 1  # TensorProto.FLOAT: the stash type of the norms we rewrite back


class _LoneNorm(pattern.RewriteRuleClassBase):
    """Default-domain SimplifiedLayerNormalization (float32) -> ONNX RMSNormalization (opset 23+) or its original ops."""

    def __init__(self, opset: int) -> None:
        super().__init__(f"LoneRmsNorm{opset}")
        self._opset = opset

    def pattern(self, op, x, scale):  # noqa: ANN001, ANN201
        return op.SimplifiedLayerNormalization(x, scale, _allow_other_attributes=True, _outputs=["norm"])

    def check(self, context, x, norm, **_) -> pattern.MatchResult:  # noqa: ANN001
        result = pattern.MatchResult()
        attrs = norm.producer().attributes
        if x.dtype != ir.DataType.FLOAT or attrs.get_int("axis", -1) != -1 or attrs.get_int("stash_type", 1) != _FLOAT:
            return result.fail("only float32 norms over the last axis are rewritten", x)
        return result

    def rewrite(self, op, x, scale, norm, **_):  # noqa: ANN001, ANN201
        eps = norm.producer().attributes.get_float("epsilon", 1e-5)
        if self._opset >= RMS_NORMALIZATION_OPSET:
            return op.RMSNormalization(x, scale, axis=-1, epsilon=eps, stash_type=_FLOAT)
        const = lambda v, dtype=np.float32: op.Constant(value=ir.tensor(np.array(v, dtype)))  # noqa: E731
        mean = op.ReduceMean(op.Pow(x, const(2.0)), const([-1], np.int64), keepdims=1)
        return op.Mul(op.Mul(x, op.Reciprocal(op.Sqrt(op.Add(mean, const(eps))))), scale)


def fuse_norms(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, int, int]:
    """A rewritten copy of ``model`` (``model`` is not changed), the norms fused and, of those, the ones with a residual Add."""
    before = sum(n.op_type == "RMSNormalization" for n in model.graph.node)
    graph = ir.from_proto(model)
    ShapeInferencePass(strict_mode=False)(graph)  # the rules check dtypes and [B, S, D] shapes: fill in what a pass before us dropped
    if fuse_rms_normalization(graph):
        fuse_skip_rms_normalization(graph)
        pattern.RewriteRuleSet([_LoneNorm.rule(opset)]).apply_to_model(graph)
    fused = ir.to_proto(graph)
    read = {i for n in fused.graph.node for i in n.input} | {o.name for o in fused.graph.output}
    for node in fused.graph.node:  # onnxscript names the mean / inv_std_var outputs; unnamed, ORT skips writing them
        if node.op_type == "SkipSimplifiedLayerNormalization":
            node.output[1:3] = [o if o in read else "" for o in node.output[1:3]]
    ops = [n.op_type for n in fused.graph.node]
    skip = ops.count("SkipSimplifiedLayerNormalization")
    return fused, skip + ops.count("RMSNormalization") - before, skip
