"""Graphs whose weights live in external data (all graphs over 2 GiB) calibrate without loading the weights into protobuf."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgecompile.calibration.streaming import calibrate_component


def test_calibration_reads_external_weights_and_matches_in_memory(tiny_build: Path, tmp_path: Path) -> None:
    source = tiny_build / "export" / "vision_encoder.onnx"
    model = onnx.load(str(source))
    folder = tmp_path / "external"
    folder.mkdir()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx.save with external data rewrites the proto it is given
    onnx.save(copy, str(folder / "vision_encoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="vision_encoder.onnx.data", size_threshold=1024)  # as exporters do: shape constants stay inline
    light = onnx.load(str(folder / "vision_encoder.onnx"), load_external_data=False)
    external = [i for i in light.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(not i.raw_data for i in external)  # the weights stayed on disk
    tensors = [n.output[0] for n in model.graph.node if n.op_type in ("MatMul", "Gelu", "Add")][:6]
    rng = np.random.default_rng(0)
    feeds = [{"pixel_values": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(3)]
    expected = calibrate_component(model, tensors, feeds, method="minmax")
    got = calibrate_component(light, tensors, feeds, method="minmax", external_data_dir=folder)
    assert expected.ranges.keys() == got.ranges.keys() and len(got.ranges) == len(tensors)
    for name in tensors:
        np.testing.assert_allclose(got.ranges[name], expected.ranges[name], rtol=1e-6)


def test_embedded_graph_moved_to_scratch_calibrates_the_same(tiny_build: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The calibrate stage holds an embedded graph as a WeightlessGraph (weights moved to scratch): same ranges."""
    import edgecompile.weightless_graph as weightless_graph
    from edgecompile.weightless_graph import WeightlessGraph

    source = tiny_build / "export" / "vision_encoder.onnx"
    model = onnx.load(str(source))
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    monkeypatch.setattr(weightless_graph, "_EXTERNALIZE_ABOVE", 0)
    graph = WeightlessGraph.open(source, tmp_path, "vision_encoder")
    moved = [i for i in graph.model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    assert graph.folder == tmp_path and moved and all(not i.raw_data for i in moved)  # tensors over 1 KiB left the protobuf
    assert graph.model.ByteSize() < model.ByteSize()
    tensors = [n.output[0] for n in model.graph.node if n.op_type in ("MatMul", "Gelu", "Add")][:6]
    rng = np.random.default_rng(1)
    feeds = [{"pixel_values": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(3)]
    expected = calibrate_component(model, tensors, feeds, method="minmax")
    got = calibrate_component(graph.model, tensors, feeds, method="minmax", external_data_dir=graph.folder)
    for name in tensors:
        np.testing.assert_allclose(got.ranges[name], expected.ranges[name], rtol=1e-6)
    assert onnx.load(str(source)).ByteSize() == model.ByteSize()  # the build's exported graph is untouched
