"""Per-layer attribution's memory does not grow with the number of layers.

A stack of L quantized MatMul layers (a hand-written Q/DQ candidate of a float graph, tensor names
kept as onnxruntime's quantizer keeps them) is attributed at L=2 and L=24. Asserted: every run asks
onnxruntime for at most ``chunk_tensors`` tensors, the activations held at once stay within the
chunk's byte budget, and the Python-side peak (tracemalloc sees numpy's buffers) at 24 layers is
within a small margin of the one at 2 layers, where keeping every tensor would be 12x.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecompile.plan.plan import PlanEntry
from edgecompile.validation.layer_attribution import AttributionStats, attribute_layers

TOKENS, HIDDEN = 1024, 64
TENSOR_BYTES = TOKENS * HIDDEN * 4


def _stack(layers: int, *, quantized: bool, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
        a = x
        if quantized:  # activation and weight through int8 Q/DQ, as the quantizer writes them
            scale = np.array(4.0 / 127, np.float32)
            wscale = np.array(np.abs(w).max() / 127, np.float32)
            inits += [numpy_helper.from_array(scale, f"s{i}"), numpy_helper.from_array(np.array(0, np.int8), f"z{i}")]
            inits += [numpy_helper.from_array(np.round(w / wscale).astype(np.int8), f"wq{i}"), numpy_helper.from_array(wscale, f"ws{i}")]
            nodes += [helper.make_node("QuantizeLinear", [x, f"s{i}", f"z{i}"], [f"{x}_QuantizeLinear_Output"], name=f"q{i}")]
            nodes += [helper.make_node("DequantizeLinear", [f"{x}_QuantizeLinear_Output", f"s{i}", f"z{i}"], [f"{x}_DequantizeLinear_Output"], name=f"dq{i}")]
            nodes += [helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", f"z{i}"], [f"w{i}"], name=f"dqw{i}")]
            a = f"{x}_DequantizeLinear_Output"
        else:
            inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [a, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"), helper.make_node("Tanh", [f"mm{i}"], [f"h{i}"], name=f"tanh{i}")]
        x = f"h{i}"
    graph = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", HIDDEN])], [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _entries(layers: int) -> list[PlanEntry]:
    return [PlanEntry("enc", f"matmul{i}", "MatMul", "linear", f"layer{i}", f"w{i}", "int8", "per_tensor", None, True, "rules[0]", "test") for i in range(layers)]


def _attribute(layers: int, chunk_tensors: int, chunk_bytes: int) -> tuple[list, AttributionStats]:
    feeds = [{"x": np.random.default_rng(s).standard_normal((1, TOKENS, HIDDEN)).astype(np.float32)} for s in range(3)]
    reference, candidate = _stack(layers, quantized=False), _stack(layers, quantized=True)
    stats = AttributionStats()
    rows = attribute_layers("enc", reference, candidate, feeds, _entries(layers), chunk_tensors=chunk_tensors, chunk_bytes=chunk_bytes, stats=stats)
    return rows, stats


@pytest.mark.parametrize("layers", [2, 24])
def test_every_layer_attributed_within_chunk_limits(layers: int) -> None:
    rows, stats = _attribute(layers, chunk_tensors=6, chunk_bytes=1 << 40)
    assert len(rows) == layers and all(r.note == "" and r.added is not None and 0 < r.added < 0.2 for r in rows), rows
    assert all(r.accumulated is not None and r.accumulated >= 0 for r in rows)
    assert stats.max_outputs_per_run <= 6
    assert stats.chunks >= (layers * 2) // 6  # the chunks really split the layers


def test_chunks_sized_by_bytes() -> None:
    budget = 6 * TENSOR_BYTES
    _, stats = _attribute(24, chunk_tensors=1000, chunk_bytes=budget)
    assert stats.chunks > 1
    assert stats.max_chunk_bytes <= budget, (stats.max_chunk_bytes, budget)


def test_held_activations_independent_of_layer_count() -> None:
    _, small = _attribute(12, chunk_tensors=8, chunk_bytes=1 << 40)
    _, large = _attribute(24, chunk_tensors=8, chunk_bytes=1 << 40)
    _, everything = _attribute(24, chunk_tensors=10_000, chunk_bytes=1 << 40)  # what exposing every tensor holds
    assert everything.chunks == 1 and everything.max_chunk_bytes >= 24 * 2 * TENSOR_BYTES
    assert large.max_chunk_bytes <= 2 * 8 * TENSOR_BYTES  # two runs of at most 8 tensors each
    assert large.max_chunk_bytes == small.max_chunk_bytes and large.chunks >= 2 * small.chunks - 1
    assert large.max_chunk_bytes * 4 < everything.max_chunk_bytes


def test_large_isolated_nodes_are_opened_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ISOLATED_KEEP_BYTES a cut-out node's sessions live for one sample: same rows, one node's weights open at a time."""
    import edgecompile.validation.layer_attribution as attribution

    kept_rows, kept = _attribute(6, chunk_tensors=32, chunk_bytes=1 << 40)
    monkeypatch.setattr(attribution, "ISOLATED_KEEP_BYTES", 0)
    rows, transient = _attribute(6, chunk_tensors=32, chunk_bytes=1 << 40)
    assert [(r.node, r.added, r.added_qdq, r.accumulated) for r in rows] == [(r.node, r.added, r.added_qdq, r.accumulated) for r in kept_rows]
    assert kept.transient_isolated == 0 and transient.transient_isolated == 6
    one_layer = HIDDEN * HIDDEN  # the int8 weight of one MatMul (scales and zero points add a few bytes)
    assert one_layer <= transient.max_open_isolated_weight_bytes < 2 * one_layer
    assert kept.max_open_isolated_weight_bytes >= 6 * one_layer
