"""INT8 KV cache for a decoder fused into GroupQueryAttention (plan role ``kv_cache``, precision int8).

At a few hundred tokens the cache is small next to the weights, but it grows with every token and is
read in full at every step; INT8 holds it in a quarter of FP32's bytes. ONNX Runtime's CPU
GroupQueryAttention quantizes the new K/V into an INT8 cache itself (``kv_cache_bit_width=8``,
``k_quant_type``/``v_quant_type`` PER_TENSOR or PER_CHANNEL, symmetric, saturating) and dequantizes
on read; what it needs from the build is the scales, and past/present typed INT8.

Scales are calibrated on the float decoder (the exported graph), from the calibration prompts' prefill:
the cache tensors are its ``present_*`` outputs. V's scale is its absolute maximum per channel (or per
tensor) / 127. K is stored after rotary, which rotates each pair of channels (d, d + head_dim/2) by a
position-dependent angle: a token generated later, at a position the prompts never reached, can move a
pair's magnitude from one channel of the pair to the other. So K's per-channel bound is the largest
norm of the pair, which rotation does not change, taken for both channels of the pair.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.errors import InputError
from edgecompile.plan.plan import PlanEntry

_QMAX = 127.0
_SCALE_INPUTS = 12  # GroupQueryAttention inputs 12, 13: k_scale, v_scale
_TYPES = {"per_channel": "PER_CHANNEL", "per_tensor": "PER_TENSOR"}


def kv_cache_entry(entries: list[PlanEntry]) -> PlanEntry | None:
    """The component's INT8 kv_cache decision (None: FP32 cache); every layer must agree."""
    cache = [e for e in entries if e.role == "kv_cache"]
    int8 = [e for e in cache if e.precision == "int8"]
    if int8 and len(int8) != len(cache):
        raise InputError(f"plan: role kv_cache is int8 for {len(int8)} of {len(cache)} cache tensors of {cache[0].component}; the runtime keeps one cache dtype per decoder, plan every layer's kv_cache the same")
    if int8 and len({e.granularity for e in int8}) != 1:
        raise InputError(f"plan: role kv_cache of {int8[0].component}: one granularity (per_tensor or per_channel) for every layer")
    return int8[0] if int8 else None


def calibrate_kv_ranges(reference: Path | bytes, feeds: Iterable[dict[str, np.ndarray]], granularity: str) -> dict[str, np.ndarray]:
    """``present_*`` name -> bound of |value| (per channel: shape (1, kv_heads, 1, head_dim); per tensor: (1,)) over the prompts' prefill."""
    from edgecompile.runtime.onnx_cpu import cpu_session

    session = cpu_session(reference if isinstance(reference, bytes) else str(reference))
    names = [o.name for o in session.get_outputs() if o.name.startswith(("present_key_", "present_value_"))]
    wanted = {i.name for i in session.get_inputs()}
    bounds: dict[str, np.ndarray] = {}
    count = 0
    for feed in feeds:
        outs = session.run(names, {k: v for k, v in feed.items() if k in wanted})
        for name, value in zip(names, outs, strict=True):
            bound = _pair_norm(value) if name.startswith("present_key_") else np.abs(value)
            bound = bound.max(axis=(0, 2), keepdims=True)
            bounds[name] = bound if name not in bounds else np.maximum(bounds[name], bound)
        count += 1
    if count == 0:
        raise InputError("INT8 KV cache: the calibration set gave no decoder samples; the cache scales are calibrated on its prompts")
    if granularity == "per_tensor":
        return {n: np.array([b.max()], np.float32) for n, b in bounds.items()}
    return {n: b.astype(np.float32) for n, b in bounds.items()}


def _pair_norm(k: np.ndarray) -> np.ndarray:
    """|(k_d, k_{d+h/2})| for both channels of each rotate-half pair: the bound rotary cannot move."""
    half = k.shape[-1] // 2
    norm = np.sqrt(k[..., :half] ** 2 + k[..., half:] ** 2)
    return np.concatenate([norm, norm], axis=-1)


def quantize_kv_cache(model: onnx.ModelProto, bounds: dict[str, np.ndarray], granularity: str) -> onnx.ModelProto:
    """Every GroupQueryAttention with its present_* in ``bounds``: INT8 cache, scales = bound / 127, past/present typed INT8."""
    quant = _TYPES[granularity]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    model, graph = copy, copy.graph
    int8 = set()
    for node in [n for n in graph.node if n.op_type == "GroupQueryAttention"]:
        present_k, present_v = node.output[1], node.output[2]
        if present_k not in bounds or present_v not in bounds:
            continue
        scales = []
        for name in (present_k, present_v):
            scale = np.maximum(bounds[name], 1e-8) / _QMAX
            graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), f"{name}_int8_scale"))
            scales.append(f"{name}_int8_scale")
        inputs = list(node.input) + [""] * max(0, _SCALE_INPUTS - len(node.input))
        del node.input[:]
        node.input.extend([*inputs[:_SCALE_INPUTS], *scales, *inputs[_SCALE_INPUTS + 2 :]])
        for attr in [a for a in node.attribute if a.name in ("kv_cache_bit_width", "k_quant_type", "v_quant_type")]:
            node.attribute.remove(attr)
        node.attribute.extend([helper.make_attribute("kv_cache_bit_width", 8), helper.make_attribute("k_quant_type", quant), helper.make_attribute("v_quant_type", quant)])
        int8 |= {node.input[3], node.input[4], present_k, present_v}
    for value in [*graph.input, *graph.output]:
        if value.name in int8:
            value.type.tensor_type.elem_type = onnx.TensorProto.INT8
    return model


def apply_kv_cache_plan(model: onnx.ModelProto, entries: list[PlanEntry], reference: Path | bytes, calibration_feeds: Callable[[str], Iterable[dict]] | None, component: str) -> tuple[onnx.ModelProto, str | None]:
    """The ORT CPU build's kv_cache step: INT8 cache where the plan says so (None note: FP32 cache, nothing to say).

    ``reference`` is the float decoder the scales are calibrated on (the exported graph), ``model``
    the built one (fused into GroupQueryAttention).
    """
    entry = kv_cache_entry(entries)
    if entry is None:
        return model, None
    gqa = [n for n in model.graph.node if n.op_type == "GroupQueryAttention"]
    presents = [o.name for o in model.graph.output if o.name.startswith(("present_key_", "present_value_"))]
    if not gqa or {o for n in gqa for o in n.output[1:3]} != set(presents):
        return model, f"{component}: kv_cache int8 planned but the decoder is not fused into GroupQueryAttention on every layer; FP32 cache kept"
    if calibration_feeds is None:
        return model, f"{component}: kv_cache int8 planned but no calibration samples reach the build; FP32 cache kept"
    granularity = entry.granularity or "per_channel"
    bounds = calibrate_kv_ranges(reference, calibration_feeds(component), granularity)
    model = quantize_kv_cache(model, bounds, granularity)
    return model, f"{component}: INT8 KV cache ({granularity}, symmetric, scales from the calibration prompts' float K/V; GroupQueryAttention kv_cache_bit_width=8) on {len(gqa)} layer(s)"


def cache_dtype(model: onnx.ModelProto) -> str:
    """What generation.json's ``cache_dtype`` should say for this decoder: "int8" or "float32"."""
    kinds = {i.type.tensor_type.elem_type for i in model.graph.input if i.name.startswith("past_key_")}
    return "int8" if kinds == {onnx.TensorProto.INT8} else "float32"
