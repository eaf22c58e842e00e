"""Q/DQ and MatMulNBits insertion with onnxruntime.quantization, driven by the precision plan.

Shared by every backend that ships an ONNX graph (ORT CPU, QNN, TensorRT): they differ in the
types and symmetry they ask for, not in how Q/DQ nodes are placed.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from edgecompile.calibration.ranges import TensorRanges
from edgecompile.errors import InputError
from edgecompile.plan.plan import PlanEntry

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


def insert_matmul_nbits(model: onnx.ModelProto, entries: list[PlanEntry], algorithm: str, calibration_feeds: Iterable[dict] | None = None) -> onnx.ModelProto:
    """Replace the plan's INT4 MatMuls by MatMulNBits (block-wise, weight-only) with RTN or GPTQ."""
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
    if algorithm == "gptq":
        if calibration_feeds is None:
            raise InputError("quantization.int4_algorithm: gptq needs calibration samples for this component")
        return _gptq(model, {e.node for e in int4}, block, sym, list(calibration_feeds))
    config = mnb.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=sym, accuracy_level=4)
    quantizer = mnb.MatMulNBitsQuantizer(model, bits=4, block_size=block, is_symmetric=sym, accuracy_level=4, nodes_to_include=[e.node for e in int4], algo_config=config)
    quantizer.process()
    return quantizer.model.model


def _gptq(model: onnx.ModelProto, nodes: set[str], block: int, symmetric: bool, feeds: list[dict]) -> onnx.ModelProto:
    """GPTQ through onnxruntime's own implementation (onnxruntime.quantization.neural_compressor.gptq_quantize).

    Called directly rather than through MatMulNBitsQuantizer: that path builds its per-node config from
    *every* constant-weight MatMul and ignores ``nodes_to_include`` (it would also INT4 the lm_head the plan
    keeps INT8), and it deep-copies the data reader, which a streaming reader cannot survive. Here every
    MatMul outside the plan's INT4 set is marked "fp32" (left alone) and the feeds are a list.
    """
    if not feeds:
        raise InputError("quantization.int4_algorithm: gptq got no calibration samples for this component")
    from onnxruntime.quantization.neural_compressor import gptq_quantize

    scheme = "sym" if symmetric else "asym"
    config: dict[str, object] = {n.name: ({"bits": 4, "group_size": block, "scheme": scheme} if n.name in nodes else "fp32") for n in model.graph.node if n.op_type == "MatMul"}
    with contextlib.redirect_stdout(io.StringIO()):  # it draws a progress bar on stdout
        quantized = gptq_quantize(model, dataloader=_Loader(feeds), weight_config=config, num_bits=4, group_size=block, scheme=scheme, n_samples=-1, blocksize=128, perchannel=True, accuracy_level=4)
    return quantized.model if hasattr(quantized, "model") else quantized


class _Loader:
    """The (inputs, label) batches neural_compressor's prepare_inputs iterates over."""

    batch_size = 1

    def __init__(self, feeds: list[dict]) -> None:
        self.feeds = feeds

    def __iter__(self):  # noqa: ANN204
        return ((f, None) for f in self.feeds)
