"""QDQ for HTP: every activation quantized (HTP runs no float ops), QNN-compatible types.

The types and per-op overrides come from onnxruntime's ``get_qnn_qdq_config`` (it knows, e.g.,
that QNN has no per-channel MatMul and that 16-bit Sigmoid needs a fixed scale). The ranges are
ours: onnxruntime's calibrators hold every activation of every sample in memory, so we stream
(edgecompile.calibration.streaming) over the *prepared* graph. Why not reuse calibrate/ranges.json:
that file has ranges only for the inputs/outputs of INT8 nodes of the exported graph, while HTP
needs one for every activation; qnn_preprocess_model fuses MatMul+Add into Gemm and renames
tensors; and the static text shape adds padded positions whose activations the device computes.
The stage's ranges are used as a cross-check (same set, same method) and the gap is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgecompile.calibration.ranges import TensorRanges
from edgecompile.calibration.streaming import calibrate_component

from edgecompile.backends.common.onnx_quant import QTYPES

# 4-bit weights: QDQ with int4 DequantizeLinear (ORT's QuantType.QInt4), which QNN EP maps to HTP's 4-bit weights.
_QTYPES = {**QTYPES, "int4": "QInt4", "uint4": "QUInt4"}


@dataclass(frozen=True)
class HtpQuantSettings:
    activation_type: str = "uint16"
    weight_type: str = "uint8"
    per_channel: bool = True
    method: str = "minmax"
    percentile: float = 99.999
    bins: int = 2048


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Names of every float tensor a node produces, plus float graph inputs."""
    inferred = onnx.shape_inference.infer_shapes(model)
    produced = {o for n in model.graph.node for o in n.output}
    initializers = {t.name for t in model.graph.initializer}
    produced |= {i.name for i in model.graph.input}
    values = list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)
    names = [v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and v.name not in initializers and v.name in produced]
    return list(dict.fromkeys(names))


def calibrate_prepared(model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]], settings: HtpQuantSettings) -> TensorRanges:
    ranges = calibrate_component(model, float_activations(model), feeds, method=settings.method, bins=settings.bins, percentile=settings.percentile)
    # Scalar float constants selected by Where (the attention mask's 0 / mask_value) are quantized
    # as activations (ForceQuantizeNoInputCheck); their range is the constant and zero.
    inits = {t.name: t for t in model.graph.initializer}
    extra = {}
    for node in model.graph.node:
        if node.op_type == "Where":
            for name in node.input[1:]:
                if name in inits and inits[name].data_type == onnx.TensorProto.FLOAT:
                    value = numpy_helper.to_array(inits[name])
                    extra[name] = (min(float(value.min()), 0.0), max(float(value.max()), 0.0))
    return TensorRanges(ranges.method, {**ranges.ranges, **extra}, ranges.samples)


def range_gap(stage: TensorRanges | None, ours: TensorRanges) -> dict[str, float | int]:
    """Largest relative difference between the calibrate stage's ranges and ours, on shared names."""
    if stage is None:
        return {"shared_tensors": 0}
    shared = sorted(set(stage.ranges) & set(ours.ranges))
    gaps = [max(abs(stage.ranges[t][0] - ours.ranges[t][0]), abs(stage.ranges[t][1] - ours.ranges[t][1])) / max(abs(ours.ranges[t][1] - ours.ranges[t][0]), 1e-12) for t in shared]
    return {"shared_tensors": len(shared), "max_relative_gap": float(max(gaps)) if gaps else 0.0}


def quantize_for_htp(model: onnx.ModelProto, ranges: TensorRanges, settings: HtpQuantSettings) -> onnx.ModelProto:
    """A QDQ model whose every node has quantized inputs and outputs in QNN-supported types."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    activation = getattr(QuantType, _QTYPES[settings.activation_type])
    weight = getattr(QuantType, _QTYPES[settings.weight_type])
    config = get_qnn_qdq_config(model, _NoReader(), activation_type=activation, weight_type=weight, per_channel=settings.per_channel, weight_symmetric=True)
    extra = {**config.extra_options, "ForceQuantizeNoInputCheck": True}
    quantizer = QDQQuantizer(model, settings.per_channel, False, weight, activation, ranges.to_ort(), [], config.nodes_to_exclude or [], config.op_types_to_quantize, extra)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # per-channel axis warnings for 1-D LayerNorm weights (they fall back to per-tensor)
    try:
        quantizer.quantize_model()
    finally:
        root.setLevel(level)
    return quantizer.model.model


def qdq_types(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Element types of quantized activations, linear-layer weights, biases and other constants."""
    inits = {t.name: t for t in model.graph.initializer}
    weight_inputs = {n.input[1] for n in model.graph.node if n.op_type in ("Gemm", "Conv", "MatMul") and len(n.input) > 1}
    kinds: dict[str, set[str]] = {"activations": set(), "weights": set(), "biases": set(), "other_constants": set()}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = node.input[0]
        zero_point = node.input[2] if len(node.input) > 2 else None
        elem = inits[zero_point].data_type if zero_point in inits else inits[source].data_type if source in inits else None
        name = onnx.TensorProto.DataType.Name(elem) if elem is not None else "?"
        if source not in inits:
            kinds["activations"].add(name)
        elif inits[source].data_type == onnx.TensorProto.INT32:
            kinds["biases"].add(name)
        elif node.output[0] in weight_inputs:
            kinds["weights"].add(name)
        else:
            kinds["other_constants"].add(name)
    return {k: sorted(v) for k, v in kinds.items()}


class _NoReader:
    """get_qnn_qdq_config wants a reader; ranges come from our streaming calibration instead."""

    def get_next(self) -> None:
        return None
