"""Streaming calibration: peak memory does not grow with the number of samples.

onnxruntime's calibrators keep every intermediate output of the whole calibration set before
computing ranges (onnxruntime issues #10503, #21979: 100+ GB). Here each sample is run, its
activations folded into running statistics, and dropped. Min/max is a running reduction; for
percentile and entropy we feed onnxruntime's own HistogramCollector one sample at a time (its
histograms merge incrementally), so the range arithmetic is still onnxruntime's.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import Any

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgecompile import progress
from edgecompile.calibration.ranges import TensorRanges

Feeds = dict[str, np.ndarray]


def expose_tensors(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs include ``tensors`` (float activations)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {o.name for o in exposed.graph.output}
    for name in tensors:
        if name not in existing:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return exposed


class _MinMax:
    def __init__(self) -> None:
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}

    def update(self, values: dict[str, np.ndarray]) -> None:
        for name, arr in values.items():
            if arr.size == 0:
                continue
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            self.lo[name] = min(lo, self.lo.get(name, lo))
            self.hi[name] = max(hi, self.hi.get(name, hi))

    def result(self) -> dict[str, tuple[float, float]]:
        return {k: (self.lo[k], self.hi[k]) for k in self.lo}


class _Histogram:
    """onnxruntime's HistogramCollector, fed incrementally."""

    def __init__(self, method: str, symmetric: bool, bins: int, percentile: float) -> None:
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.collector = HistogramCollector(method=method, symmetric=symmetric, num_bins=bins, num_quantized_bins=128, percentile=percentile, scenario="same")
        self.minmax = _MinMax()
        self.minmax_only: set[str] = set()

    def update(self, values: dict[str, np.ndarray]) -> None:
        self.minmax.update(values)
        with contextlib.redirect_stdout(io.StringIO()):  # the collector prints on every call
            for name, value in values.items():
                if not value.size or name in self.minmax_only:
                    continue
                try:
                    self.collector.collect({name: value.astype(np.float32, copy=False)})
                except ValueError:
                    # numpy cannot bin a (near-)constant tensor: its min/max is its range.
                    self.minmax_only.add(name)
                    self.collector.histogram_dict.pop(name, None)

    def result(self) -> dict[str, tuple[float, float]]:
        with contextlib.redirect_stdout(io.StringIO()):
            computed = self.collector.compute_collection_result()
        out: dict[str, tuple[float, float]] = {}
        for name, value in computed.items():
            # onnxruntime returns (low, high, ...) tuples; the extra entries are histograms.
            pair = value.range_value if hasattr(value, "range_value") else value
            out[name] = (float(np.asarray(pair[0])), float(np.asarray(pair[1])))
        # Tensors that never varied have no histogram result; fall back to their min/max.
        for name, pair in self.minmax.result().items():
            out.setdefault(name, pair)
        return out


def calibrate_component(
    model: onnx.ModelProto,
    tensors: list[str],
    feeds: Iterable[Feeds],
    *,
    method: str,
    symmetric: bool = False,
    bins: int = 2048,
    percentile: float = 99.999,
    extra_stats: Any = None,
    external_data_dir: Path | None = None,
) -> TensorRanges:
    """Measure ranges of ``tensors`` in ``model`` over ``feeds`` one sample at a time.

    ``external_data_dir``: where ``model``'s external weights live when it was loaded without them
    (graphs over 2 GiB cannot be serialized with their weights; onnxruntime reads them from there).
    """
    exposed = expose_tensors(model, tensors)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep tensor names
    # No arena: a decoder prefill's activations (600 tokens x a 152k vocabulary is 365 MB of logits)
    # would stay reserved in it for the rest of the stage; without it each run's memory goes back.
    options.enable_cpu_mem_arena = False
    if external_data_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_data_dir.resolve()))
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del exposed  # the session holds its own copy; a graph with embedded weights is not kept twice
    names = [o.name for o in session.get_outputs() if o.name in set(tensors)]
    stats: _MinMax | _Histogram = _MinMax() if method == "minmax" else _Histogram(method, symmetric, bins, percentile)
    count = 0
    for feed in progress.track(feeds, f"calibrate: {len(names)} tensors"):
        values = dict(zip(names, session.run(names, feed), strict=True))
        stats.update(values)
        if extra_stats is not None:
            extra_stats(values)
        count += 1
    if count == 0:
        raise ValueError("the calibration set produced no inputs for this component")
    return TensorRanges(method, stats.result(), count)
