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


def insert_qdq(model: onnx.ModelProto, component: str, entries: list[PlanEntry], ranges: TensorRanges, settings: QdqSettings) -> onnx.ModelProto:
    """Quantize exactly the plan's INT8 nodes (W8A8) using ``ranges``; other nodes stay float."""
    int8 = [e for e in entries if e.precision == "int8"]
    if not int8:
        return model
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

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


def insert_matmul_nbits(model: onnx.ModelProto, entries: list[PlanEntry], prequantized: Prequantized | None = None) -> onnx.ModelProto:
    """Replace the plan's INT4 MatMuls by MatMulNBits (block-wise, weight-only).

    MatMuls a weight transform already rounded (GPTQ's ``prequantized`` codes) are packed as they
    are; the rest are rounded to nearest by onnxruntime's MatMulNBitsQuantizer.
    """
    int4 = [e for e in entries if e.precision == "int4"]
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
