"""Streaming calibration: each method gives sensible ranges, and memory does not grow with samples."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgecompile.calibration.streaming import calibrate_component


def _relu_model() -> onnx.ModelProto:
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(count: int, outlier: bool = True):  # noqa: ANN202
    rng = np.random.default_rng(0)
    for i in range(count):
        x = rng.standard_normal((1, 1000)).astype(np.float32)
        if outlier and i == 3:
            x[0, 0] = 100.0  # one rare outlier
        yield {"x": x}


def test_minmax_covers_the_outlier() -> None:
    ranges = calibrate_component(_relu_model(), ["x", "y"], _feeds(20), method="minmax")
    assert ranges.samples == 20
    lo, hi = ranges.ranges["x"]
    assert hi == pytest.approx(100.0) and lo < -2.5


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_clip_the_rare_outlier(method: str) -> None:
    bins = 128 if method == "entropy" else 2048  # onnxruntime's defaults (its entropy search is quadratic in bins)
    ranges = calibrate_component(_relu_model(), ["x"], _feeds(20), method=method, percentile=99.9, bins=bins)
    lo, hi = ranges.ranges["x"]
    assert 2.0 < hi < 50.0, (lo, hi)  # the single 100.0 is clipped away, the bulk is kept
    assert lo < -1.0


def test_peak_memory_does_not_grow_with_sample_count() -> None:
    import tracemalloc

    def peak(count: int) -> int:
        tracemalloc.start()
        calibrate_component(_relu_model(), ["x", "y"], _feeds(count, outlier=False), method="percentile", bins=512)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(10), peak(200)
    assert large < small * 1.5 + 200_000, (small, large)


def test_empty_feed_is_an_error() -> None:
    with pytest.raises(ValueError, match="no inputs"):
        calibrate_component(_relu_model(), ["x"], iter(()), method="minmax")
