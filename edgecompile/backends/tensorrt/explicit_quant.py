"""The explicit-quantization ONNX graph TensorRT's ONNX parser accepts, written from the precision plan.

TensorRT (strongly typed / explicit quantization) takes its precisions from the graph itself:

* INT8 nodes: QuantizeLinear/DequantizeLinear pairs, symmetric, zero point 0, INT8 activations and
  per-channel INT8 weights (onnxruntime.quantization's QDQ quantizer, shared with ORT CPU).
* INT4 weight-only linears: a block-quantized INT4 initializer behind an opset-21
  ``DequantizeLinear(block_size=N)`` feeding the MatMul (onnxruntime's MatMulNBits quantizer in
  QDQ format); activations stay float.
* FP16 nodes: the plan's FP16 nodes get FP16 weights and Casts at their edges
  (onnxruntime.transformers.float16 with every other node blocked), everything else keeps the
  exported dtype.

Residual Adds, softmax and layer norms are never quantized: only the plan's weight nodes are.
:func:`check_explicit_quantization` states these rules as checks, so tests and the build say the
same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from edgecompile.backends.common.graph_tidy import topological_sort
from edgecompile.backends.common.onnx_quant import QdqSettings, insert_qdq
from edgecompile.calibration.ranges import TensorRanges
from edgecompile.errors import InputError
from edgecompile.plan.plan import PlanEntry

TRT_QDQ = QdqSettings(activation_type="int8", weight_type="int8", activation_symmetric=True, weight_symmetric=True)
BLOCK_DQ_OPSET = 21


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def insert_int4_block_dq(model: onnx.ModelProto, entries: list[PlanEntry], opset_hint: str) -> onnx.ModelProto:
    """Quantize the plan's INT4 MatMul weights block-wise, as INT4 initializer -> DequantizeLinear -> MatMul."""
    int4 = [e for e in entries if e.precision == "int4"]
    if not int4:
        return model
    if _opset(model) < BLOCK_DQ_OPSET:
        raise InputError(f"{opset_hint}: INT4 block-quantized DequantizeLinear needs ONNX opset >= {BLOCK_DQ_OPSET} (the graph has {_opset(model)}); set 'opset: 21' in the recipe")
    blocks = {e.block_size or 32 for e in int4}
    if len(blocks) != 1:
        raise InputError(f"{opset_hint}: INT4 nodes of one component must share block_size")
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    block = blocks.pop()
    # TensorRT's INT4 weight-only path is symmetric (zero point 0), whatever the rule says.
    config = mnb.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=None, quant_format=QuantFormat.QDQ, op_types_to_quantize=("MatMul",))
    quantizer = mnb.MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=True, nodes_to_include=[e.node for e in int4], algo_config=config)
    quantizer.process()
    return quantizer.model.model


def cast_fp16_nodes(model: onnx.ModelProto, entries: list[PlanEntry]) -> onnx.ModelProto:
    """Run the plan's FP16 nodes in FP16 (FP16 weights, Casts at their edges); the rest keeps its dtype."""
    fp16 = {e.node for e in entries if e.precision == "fp16"}
    if not fp16:
        return model
    from onnxruntime.transformers.float16 import convert_float_to_float16

    blocked = [n.name for n in model.graph.node if n.name not in fp16]
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked, op_block_list=[])
    del converted.graph.value_info[:]  # the converter leaves stale float32 value_info behind; shapes are re-inferable
    return converted


def explicit_quantization_graph(model: onnx.ModelProto, component: str, entries: list[PlanEntry], ranges: TensorRanges | None) -> onnx.ModelProto:
    """The full rewrite for one component: INT8 Q/DQ, INT4 block DQ, FP16 casts, in that order."""
    if ranges is not None:
        model = insert_qdq(model, component, entries, ranges, TRT_QDQ)
    elif any(e.precision == "int8" for e in entries):
        raise InputError(f"{component}: the plan has INT8 nodes but calibration produced no ranges for it")
    model = insert_int4_block_dq(model, entries, f"{component} (recipe field 'opset')")
    model = cast_fp16_nodes(model, entries)
    ordered = topological_sort(model)  # onnxruntime's rewriters append nodes; TensorRT's parser wants graph order
    onnx.checker.check_model(ordered)
    return ordered


@dataclass
class QuantizationCheck:
    """What :func:`check_explicit_quantization` found; ``problems`` empty means TensorRT-ready."""

    int8_qdq_pairs: int = 0
    int4_block_dq: int = 0
    per_channel_weights: int = 0
    fp16_initializers: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"int8_qdq_pairs": self.int8_qdq_pairs, "int4_block_dq": self.int4_block_dq, "per_channel_weights": self.per_channel_weights, "fp16_initializers": self.fp16_initializers, "problems": list(self.problems)}


def _const(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def check_explicit_quantization(model: onnx.ModelProto, residual_adds: set[str]) -> QuantizationCheck:
    """Check the rules TensorRT's explicit quantization imposes, on a written graph.

    Zero points all 0; Q/DQ INT8 or INT4 only; INT4 only as block-quantized DequantizeLinear on
    initializers; per-channel INT8 weights; no DequantizeLinear output feeding a residual Add.
    """
    result = QuantizationCheck()
    consts = _const(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            if node.op_type == "Add" and node.name in residual_adds:
                for name in node.input:
                    src = producers.get(name)
                    if src is not None and src.op_type == "DequantizeLinear":
                        result.problems.append(f"residual Add {node.name} reads a DequantizeLinear output ({src.name}): quantized residual add")
            continue
        zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zero is not None and np.any(zero.astype(np.int32) != 0):
            result.problems.append(f"{node.name}: zero point is not 0 (TensorRT takes symmetric quantization only)")
        dtype = zero.dtype if zero is not None else None
        block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            data = next(t for t in model.graph.initializer if t.name == node.input[0])
            if data.data_type == onnx.TensorProto.INT4:
                if block <= 0:
                    result.problems.append(f"{node.name}: INT4 weights without block_size")
                result.int4_block_dq += 1
                continue
            if data.data_type != onnx.TensorProto.INT8:
                result.problems.append(f"{node.name}: weight type {onnx.TensorProto.DataType.Name(data.data_type)}, expected INT8 or INT4")
            scale = consts.get(node.input[1])
            if scale is not None and scale.size > 1:
                result.per_channel_weights += 1
            continue
        if node.op_type == "QuantizeLinear":
            result.int8_qdq_pairs += 1
            if dtype is not None and dtype != np.int8:
                result.problems.append(f"{node.name}: activation type {dtype}, expected int8 (TensorRT has no uint8 Q/DQ)")
    result.fp16_initializers = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return result
