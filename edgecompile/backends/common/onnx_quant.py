"""Q/DQ and MatMulNBits insertion with onnxruntime.quantization, driven by the precision plan.

Shared by every backend that ships an ONNX graph (ORT CPU, QNN, TensorRT): they differ in the
types and symmetry they ask for, not in how Q/DQ nodes are placed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx

from edgecompile.calibration.ranges import TensorRanges
from edgecompile.errors import InputError
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.prequantized import Prequantized, apply_prequantized

QTYPES = {"uint8": "QUInt8", "int8": "QInt8", "uint16": "QUInt16", "int16": "QInt16"}


@dataclass(frozen=True)
class QdqSettings:
    """How the INT8 nodes of one component are quantized."""

    activation_type: str = "uint8"
    weight_type: str = "int8"
    activation_symmetric: bool = False
    weight_symmetric: bool | None = None  # None: as the plan's rules say; True/False: the backend requires it
    extra: dict = field(default_factory=dict)


def _granularity(entries: list[PlanEntry], component: str) -> bool:
    kinds = {e.granularity for e in entries}
    if len(kinds) > 1:
        raise InputError(f"{component}: INT8 weights mix per-tensor and per-channel granularity; onnxruntime's QDQ quantizer takes one per graph")
    return kinds == {"per_channel"}


def _weight_symmetry(entries: list[PlanEntry], component: str, required: bool | None) -> bool:
    """INT8 weights are symmetric. A rule asking otherwise is refused, not silently ignored:
    onnxruntime 1.32's QDQ quantizer kept per-channel INT8 weights symmetric (zero point 0) even
    with WeightSymmetric=False (checked on the tiny CLIP)."""
    asymmetric = sorted({e.node for e in entries if not e.symmetric})
    if asymmetric or required is False:
        raise InputError(f"{component}: rule field 'symmetric: false' on INT8 weights ({', '.join(asymmetric[:3])}...) is not supported; INT8 weights are quantized symmetric (zero point 0)")
    return True


def _shape_inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with onnxruntime's shape-inference marker, made without a second copy of its weights.

    onnxruntime's quantizer, given a model without that marker, runs
    ``save_and_reload_model_with_shape_infer``: ``copy.deepcopy`` of the whole graph, saved as
    external data, shape-inferred on disk, loaded back, while the caller still holds the original:
    two FP32 copies of a decoder at once (the build stage's peak on a 0.5 B LLaVA decoder). Here the
    same steps run on ``model`` itself: it is saved in place (its weights move to a scratch file and
    leave its protobuf), then onnxruntime's own ``load_model_with_shape_infer`` reads it back; the
    result is the graph the quantizer would have made, byte for byte. ``model`` is consumed.
    """
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer, model_has_infer_metadata

    if model_has_infer_metadata(model):
        return model
    with tempfile.TemporaryDirectory(prefix="edgecompile-quant-") as scratch:
        path = Path(scratch) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True)  # in place: raw data written out and cleared
        return load_model_with_shape_infer(path)


def insert_qdq(model: onnx.ModelProto, component: str, entries: list[PlanEntry], ranges: TensorRanges, settings: QdqSettings) -> onnx.ModelProto:
    """Quantize exactly the plan's INT8 nodes (W8A8) using ``ranges``; other nodes stay float.

    ``model`` is consumed when there is anything to quantize (its weights move into the returned
    graph, see :func:`_shape_inferred`); callers use the returned model only.
    """
    int8 = [e for e in entries if e.precision == "int8" and e.role != "kv_cache"]  # the cache is quantized inside GroupQueryAttention
    if not int8:
        return model
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = _shape_inferred(model)
    extra = {
        "ActivationSymmetric": settings.activation_symmetric,
        "WeightSymmetric": _weight_symmetry(int8, component, settings.weight_symmetric),
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
        **settings.extra,
    }
    quantizer = QDQQuantizer(
        model,
        _granularity(int8, component),
        False,  # reduce_range
        getattr(QuantType, QTYPES[settings.weight_type]),
        getattr(QuantType, QTYPES[settings.activation_type]),
        ranges.to_ort(),
        [e.node for e in int8],
        [],
        sorted({e.op_type for e in int8}),
        extra,
    )
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    quantizer.quantize_model()
    return quantizer.model.model


def _static_int4(entries: list[PlanEntry]) -> list[PlanEntry]:
    """INT4 entries that get static INT8 activations (or per-channel weights): the QDQ path."""
    return [e for e in entries if e.precision == "int4" and (e.activations == "static" or e.granularity == "per_channel")]


def insert_activation_qdq(model: onnx.ModelProto, nodes: list[str], ranges: TensorRanges, activation_type: str = "uint8", symmetric: bool = False) -> onnx.ModelProto:
    """QuantizeLinear → DequantizeLinear (per tensor, calibrated) on the first input of each of ``nodes``.

    One Q/DQ pair per activation tensor, shared by every listed node that reads it.
    """
    import numpy as np
    from onnx import helper, numpy_helper
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    qtypes = {"uint8": (np.uint8, 0, 255), "int8": (np.int8, -128, 127), "uint16": (np.uint16, 0, 65535)}
    if activation_type not in qtypes:
        raise InputError(f"quantization.activation_type: {activation_type} is not supported for static W4A8 activations; expected uint8, int8 or uint16")
    dtype, qmin, qmax = qtypes[activation_type]
    wanted = set(nodes)
    done: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name in wanted:
            x = node.input[0]
            if x not in done:
                if x not in ranges.ranges:
                    raise InputError(f"static W4A8: no calibrated range for activation '{x}' (input of {node.name}); the calibrate stage measures the inputs of INT4 nodes planned with activations: static")
                lo, hi = ranges.ranges[x]
                zp, scale = compute_scale_zp(np.array(lo, np.float32), np.array(hi, np.float32), np.array(qmin, dtype), np.array(qmax, dtype), symmetric=symmetric)
                base = f"{x}_w4a8"
                model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{base}_scale"), numpy_helper.from_array(np.array(zp, dtype), f"{base}_zero_point")])
                new_nodes.append(helper.make_node("QuantizeLinear", [x, f"{base}_scale", f"{base}_zero_point"], [f"{base}_q"], name=f"{base}_QuantizeLinear"))
                new_nodes.append(helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero_point"], [f"{base}_dq"], name=f"{base}_DequantizeLinear"))
                done[x] = f"{base}_dq"
            node.input[0] = done[x]
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model


def insert_int4_qdq(model: onnx.ModelProto, entries: list[PlanEntry], ranges: TensorRanges | None, activation_type: str = "uint8") -> onnx.ModelProto:
    """W4A8 static: INT4 weight DequantizeLinear (block-wise or per output channel, onnxruntime's
    MatMulNBitsQuantizer in QDQ format) feeding MatMul, with calibrated INT8 activation Q/DQ in front.

    ONNX Runtime's CPU EP runs this graph as it is written (checked on 1.32 with ORT_ENABLE_ALL: no
    MatMulNBits and no integer-GEMM fusion; the Q/DQ and INT4 DQ nodes stay and the MatMul runs in
    float). So the numerics are exactly INT4 weights × INT8-rounded activations with static scales,
    while the compute is float: an accuracy artifact, not a fast kernel (``w4a8-dyn`` is the fast one).
    """
    static = _static_int4(entries)
    if not static:
        return model
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    dynamic_pc = sorted(e.node for e in static if e.activations != "static")
    if dynamic_pc:
        raise InputError(f"INT4 per_channel weights with dynamic activations ({', '.join(dynamic_pc[:3])}): MatMulNBits takes blocks only; use activations: static (W4A8) or granularity per_block")
    need_act = [e.node for e in static if e.activations == "static"]
    if need_act:
        if ranges is None:
            raise InputError("static W4A8: the plan asks for calibrated INT8 activations on INT4 nodes but the build got no activation ranges for this component")
        model = insert_activation_qdq(model, need_act, ranges, activation_type)
    by_setting: dict[tuple[str, int | None, bool], list[str]] = {}
    for e in static:
        by_setting.setdefault((e.granularity or "per_block", e.block_size, e.symmetric), []).append(e.node)
    for (granularity, block, sym), nodes in by_setting.items():
        per_channel = granularity == "per_channel"
        bs = block or 32
        config = mnb.DefaultWeightOnlyQuantConfig(block_size=bs, is_symmetric=sym, accuracy_level=None, quant_format=QuantFormat.QDQ, op_types_to_quantize=("MatMul",), channel_wised_quantize=per_channel)
        quantizer = mnb.MatMulNBitsQuantizer(model, bits=4, block_size=bs, is_symmetric=sym, nodes_to_include=nodes, algo_config=config)
        quantizer.process()
        model = quantizer.model.model
    return model


def insert_matmul_nbits(model: onnx.ModelProto, entries: list[PlanEntry], prequantized: Prequantized | None = None, ranges: TensorRanges | None = None, activation_type: str = "uint8") -> onnx.ModelProto:
    """Replace the plan's INT4 MatMuls by MatMulNBits (block-wise, dynamic INT8 activations) and,
    for entries planned with ``activations: static`` (or per-channel), by INT4 weight DQ with
    calibrated activation Q/DQ (:func:`insert_int4_qdq`).

    MatMuls a weight transform already rounded (GPTQ's ``prequantized`` codes) are packed as they
    are; the rest are rounded to nearest by onnxruntime's MatMulNBitsQuantizer.
    """
    static = {e.node for e in _static_int4(entries)}
    model = insert_int4_qdq(model, entries, ranges, activation_type)
    int4 = [e for e in entries if e.precision == "int4" and e.node not in static]
    if not int4:
        return model
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    blocks = {e.block_size for e in int4}
    symmetric = {e.symmetric for e in int4}
    if len(blocks) != 1 or len(symmetric) != 1:
        raise InputError("INT4 nodes of one component must share block_size and symmetry (MatMulNBits takes one setting per pass)")
    block = blocks.pop() or 32
    sym = symmetric.pop()
    remaining = [e.node for e in int4]
    if prequantized is not None:
        model, replaced = apply_prequantized(model, prequantized, set(remaining))
        remaining = [n for n in remaining if n not in replaced]
        if not remaining:
            return model
    config = mnb.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=sym, accuracy_level=4)
    quantizer = mnb.MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=sym, accuracy_level=4, nodes_to_include=remaining, algo_config=config)
    quantizer.process()
    return quantizer.model.model
