"""Embedding tables as INT4 blocks: the plan's INT4 Gathers -> com.microsoft GatherBlockQuantized.

A 152k-token vocabulary at hidden 896 is 545 MB of FP32 (57% of an INT4 LLaVA-Qwen2-0.5B artifact)
while a decode step reads one row of it. onnxruntime's own weight-only quantizer
(``MatMulNBitsQuantizer`` with ``op_types_to_quantize=("Gather",)``) packs the table in blocks along
the hidden axis (``quant_axes``: Gather -> 1) and emits GatherBlockQuantized, which ORT's CPU
provider executes by dequantizing only the gathered rows. The node keeps its output name, so the
tensors downstream (and per-layer attribution) see the same names. Tied embeddings: the decoder's
lm_head is its own MatMul in the decoder graph (quantized by its own rule); each graph holds and
quantizes its copy.
"""

from __future__ import annotations

import onnx

from edgecompile.errors import InputError
from edgecompile.plan.plan import PlanEntry


def quantize_gathers(model: onnx.ModelProto, entries: list[PlanEntry]) -> tuple[onnx.ModelProto, list[str]]:
    """Replace the Gathers the plan puts in INT4 by GatherBlockQuantized; returns the model and the nodes done.

    ``model`` is rewritten in place (onnxruntime's quantizer edits the graph it is given): no second
    copy of a half-gigabyte table is made.
    """
    wanted = [e for e in entries if e.op_type == "Gather" and e.precision == "int4"]
    initializers = {i.name for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    targets = [e for e in wanted if e.node in nodes and nodes[e.node].input[0] in initializers]  # a constant table, not an activation
    if not targets:
        return model, []
    blocks, symmetric = {e.block_size or 32 for e in targets}, {e.symmetric for e in targets}
    if len(blocks) != 1 or len(symmetric) != 1:
        raise InputError("INT4 embedding gathers of one component must share block_size and symmetry (one quantizer pass)")
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    block, sym = blocks.pop(), symmetric.pop()
    ops, axes = ("Gather",), (("Gather", 1),)
    config = mnb.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=sym, op_types_to_quantize=ops, quant_axes=axes)
    quantizer = mnb.MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=sym, nodes_to_include=[e.node for e in targets], op_types_to_quantize=ops, quant_axes=axes, algo_config=config)
    quantizer.process()
    out = quantizer.model.model
    done = [e.node for e in targets if e.node not in {n.name for n in out.graph.node}]
    return out, done
