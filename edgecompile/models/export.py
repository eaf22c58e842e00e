"""torch -> ONNX export of one component (dynamo exporter, explicit dynamic shapes) and its parity check."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from edgecompile.models.adapter import ComponentSpec

PARITY_MIN_COSINE = 0.999
EXTERNAL_DATA_ABOVE = 1_800_000_000  # protobuf's 2 GiB limit on one serialized graph, with headroom


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the weights held in ``model``'s protobuf (raw data of initializers, Constants included)."""
    from onnx.external_data_helper import _get_all_tensors

    return sum(len(t.raw_data) for t in _get_all_tensors(model))


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    """Save a graph, its weights as one external-data file ``<name>.data`` beside it when they would pass 2 GiB.

    A stale data file of an earlier save is removed first, so the folder holds only what the graph reads.
    """
    data = path.with_name(f"{path.name}.data")
    data.unlink(missing_ok=True)
    if weight_bytes(model) > EXTERNAL_DATA_ABOVE:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _dynamic_shapes(spec: ComponentSpec) -> dict[str, Any]:
    """Keyed by the forward's parameter names; a ``*past`` parameter (decoders with a KV cache) takes the remaining inputs as a tuple."""
    dims: dict[str, torch.export.Dim] = {}
    per_input = [{axis: dims.setdefault(label, torch.export.Dim(label)) for axis, label in spec.dynamic_axes.get(name, {}).items()} for name in spec.input_names]
    params = [p for p in inspect.signature(spec.module.forward).parameters.values()]
    shapes: dict[str, Any] = {}
    for i, param in enumerate(params):
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            shapes[param.name] = tuple(per_input[i:])
            break
        if i < len(per_input):
            shapes[param.name] = per_input[i]
    return shapes


def export_component(spec: ComponentSpec, path: Path, opset: int) -> None:
    """Export ``spec`` to ``path`` with the dynamo exporter; weights stay inside the file when small."""
    spec.module.eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            spec.module,
            spec.example_inputs,
            dynamo=True,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_shapes=_dynamic_shapes(spec),
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
    # Graphs over 2 GiB keep their weights in an external-data file beside the graph (protobuf's limit).
    large = sum(t.numel() * t.element_size() for t in (*spec.module.parameters(), *spec.module.buffers())) > EXTERNAL_DATA_ABOVE
    program.save(str(path), external_data=large)
    onnx.checker.check_model(str(path))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two tensors; NaN when either holds a non-finite value (so it can never pass a threshold)."""
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def worst(current: float, new: float, *, higher_is_worse: bool) -> float:
    """max/min that keep NaN: Python's max/min skip it, which recorded NaN parity as cosine 1.0."""
    if np.isnan(current) or np.isnan(new):
        return float("nan")
    return max(current, new) if higher_is_worse else min(current, new)


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """Names of parameters and buffers holding NaN or Inf (a broken checkpoint, caught before export)."""
    bad = []
    for name, tensor in (*module.named_parameters(), *module.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    return bad


def check_parity(spec: ComponentSpec, path: Path) -> dict[str, float]:
    """Run torch and the exported graph on the example inputs and on a batch of another size."""
    if spec.parity_check is not None:
        return spec.parity_check(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst_abs, worst_cos = 0.0, 1.0
    batches = [spec.example_inputs, tuple(t[:1] for t in spec.example_inputs)]
    with torch.no_grad():
        for inputs in batches:
            expected = spec.module(*inputs)
            expected = expected if isinstance(expected, (tuple, list)) else (expected,)
            got = session.run(None, {n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)})
            for e, g in zip(expected, got, strict=False):
                e = e.numpy()
                worst_abs = worst(worst_abs, float(np.abs(e - g).max()), higher_is_worse=True)
                worst_cos = worst(worst_cos, cosine(e, g), higher_is_worse=False)
    return {"max_abs_error": worst_abs, "cosine": worst_cos, "batches_checked": len(batches)}
