"""The precision plan applied with ExecuTorch's / torchao's own quantizers, per torch module.

Two paths, chosen per component and recorded in the artifact:

* **pt2e static W8A8** (components without INT4 entries): ``prepare_pt2e`` / ``convert_pt2e`` with
  ExecuTorch's ``XNNPACKQuantizer``, configured per module name (``set_module_name``) for exactly the
  Linear/Conv modules the plan marks INT8: INT8 symmetric weights (per channel or per tensor, as
  planned), INT8 asymmetric activations calibrated on the recipe's calibration feeds (histogram
  observer). Everything else (FP16/FP32/float entries, norms, softmax) stays float.
  :class:`PlannedLinearQuantizer` keeps only the quantizer's linear and conv annotators: its
  conv+batch-norm annotators re-trace their pattern graphs once per configured module name (minutes
  for a tiny model) and match nothing in an inference graph.
* **torchao dynamic-activation** (components with INT4 entries: the decoder): ``quantize_`` with
  ``Int8DynamicActivationIntxWeightConfig`` — INT4 per-block weights (8da4w, XNNPACK's QB4W kernels)
  for INT4 entries, INT8 per-channel weights (8da8w) for the INT8 entries of that component. This is
  ExecuTorch's LLM path; XNNPACK has no weight-only INT4 linear, so activations are quantized per
  token at run time. Both changes from the plan (dynamic instead of static activations; W4A8 instead
  of W4A16) are returned as notes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from itertools import islice
from typing import Any

import numpy as np

from edgecompile.backends.executorch.plan_map import QuantTargets
from edgecompile.models.adapter import Feeds


def planned_quantizer_class() -> type:
    """``XNNPACKQuantizer`` restricted to the patterns a plan entry can name (linear, conv)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class PlannedLinearQuantizer(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if p.name in ("linear", "conv")]

        def transform_for_annotation(self, model: Any) -> Any:
            # The base class turns scalar operands of add/mul into tensor attributes (for its add/mul
            # annotators, dropped here); on CLIP's text tower that turns an index into a float.
            return model

    return PlannedLinearQuantizer


def feeds_to_args(feeds: Feeds, input_names: tuple[str, ...]) -> tuple[Any, ...]:
    import torch

    tensors = (torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names)
    return tuple(torch.empty(t.shape, dtype=t.dtype) if t.numel() == 0 else t for t in tensors)


def pt2e_static_int8(program: Any, targets: QuantTargets, calibration: Iterable[Feeds], input_names: tuple[str, ...], max_samples: int) -> tuple[Any, dict[str, Any]]:
    """Static W8A8 on the planned INT8 modules of an exported program; returns (quantized module, record)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = planned_quantizer_class()()
    for name, entry in targets.int8.items():
        quantizer.set_module_name(name, get_symmetric_quantization_config(is_per_channel=entry.granularity != "per_tensor"))
    prepared = prepare_pt2e(program.module(), quantizer)
    samples = 0
    with torch.no_grad():
        for feeds in islice(calibration, max_samples):
            prepared(*feeds_to_args(feeds, input_names))
            samples += 1
    if samples == 0:
        raise ValueError("no calibration samples for a component with INT8 entries: static activation ranges cannot be observed")
    converted = convert_pt2e(prepared)
    return converted, {"method": "pt2e static W8A8 (XNNPACKQuantizer per module name, HistogramObserver activations)", "calibration_samples": samples, "int8_modules": len(targets.int8)}


XNNPACK_GROUP_MULTIPLE = 32  # executorch/backends/xnnpack/operators/node_visitor.py: _check_per_channel_group_params


def xnnpack_block(planned: int, in_features: int) -> int | None:
    """The planned INT4 block size if XNNPACK takes it, else the smallest multiple of 32 above it dividing ``in_features``."""
    block = planned if planned % XNNPACK_GROUP_MULTIPLE == 0 else (planned // XNNPACK_GROUP_MULTIPLE + 1) * XNNPACK_GROUP_MULTIPLE
    while block <= in_features:
        if in_features % block == 0:
            return block
        block += XNNPACK_GROUP_MULTIPLE
    return None


def torchao_dynamic(module: Any, targets: QuantTargets) -> tuple[Any, dict[str, Any], list[str]]:
    """8da4w for INT4 entries and 8da8w for INT8 entries on a copy of ``module``; returns (module, record, notes)."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    quantized = copy.deepcopy(module).eval()
    modules = dict(quantized.named_modules())
    notes: list[str] = []
    by_block: dict[int, set[str]] = {}
    int8 = set(targets.int8)
    widened: dict[tuple[int, int], int] = {}
    for name, entry in targets.int4.items():
        planned = entry.block_size or 32
        in_features = modules[name].weight.shape[1]
        block = xnnpack_block(planned, in_features)
        if block is None:
            int8.add(name)
            notes.append(f"{name}: no INT4 block size that is a multiple of {XNNPACK_GROUP_MULTIPLE} divides its {in_features} input features (planned {planned}); INT8 per-channel weights (8da8w) instead")
            continue
        if block != planned:
            widened[(planned, block)] = widened.get((planned, block), 0) + 1
        by_block.setdefault(block, set()).add(name)
    for (planned, block), count in sorted(widened.items()):
        notes.append(f"{count} INT4 linears: block {planned} -> {block} (XNNPACK's blockwise INT4 kernels need a block size that is a multiple of {XNNPACK_GROUP_MULTIPLE})")
    for block, names in by_block.items():
        quantize_(quantized, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(block)), filter_fn=lambda m, fqn, names=names: fqn in names)
    if int8:
        quantize_(quantized, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0)), filter_fn=lambda m, fqn: fqn in int8)
    record = {
        "method": "torchao Int8DynamicActivationIntxWeightConfig (8da4w / 8da8w)",
        "int4_modules": sum(len(v) for v in by_block.values()),
        "int4_block_sizes": sorted(by_block),
        "int8_modules": len(int8),
    }
    return quantized, record, notes

