"""Sizes count an ONNX graph's external-data files (reference and artifact alike)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecompile.backends.base import artifact_bytes, external_data_files

WEIGHT_BYTES = 256 * 256 * 4


def _model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(path: Path, external: bool) -> Path:
    onnx.save_model(_model(), str(path), save_as_external_data=external, all_tensors_to_one_file=True, location=f"{path.name}.data", size_threshold=1024)
    return path


def test_external_data_counted(tmp_path: Path) -> None:
    embedded = _save(tmp_path / "embedded.onnx", external=False)
    external = _save(tmp_path / "external.onnx", external=True)
    assert external.stat().st_size < WEIGHT_BYTES / 100  # the graph file alone holds no weights
    assert external_data_files(external) == [(tmp_path / "external.onnx.data").resolve()]
    assert external_data_files(embedded) == []
    assert artifact_bytes(external) >= WEIGHT_BYTES
    assert abs(artifact_bytes(external) - artifact_bytes(embedded)) < 1024
    assert artifact_bytes(embedded) / artifact_bytes(external) == pytest.approx(1.0, abs=0.01)  # a compression ratio of like with like


def test_missing_data_file_refused(tmp_path: Path) -> None:
    external = _save(tmp_path / "external.onnx", external=True)
    (tmp_path / "external.onnx.data").unlink()
    with pytest.raises(FileNotFoundError, match="external.onnx.data"):
        artifact_bytes(external)


def test_bundle_directory_summed(tmp_path: Path) -> None:
    bundle = tmp_path / "model.mlpackage"
    (bundle / "Data").mkdir(parents=True)
    (bundle / "Data" / "weights.bin").write_bytes(b"\0" * 5000)
    (bundle / "Manifest.json").write_text("{}")
    assert artifact_bytes(bundle) == 5002


def test_in_memory_backends_refuse_graphs_over_their_limit(tmp_path: Path) -> None:
    from edgecompile.backends.base import refuse_in_memory_over_limit
    from edgecompile.errors import ExitCode, InputError

    external = _save(tmp_path / "external.onnx", external=True)
    refuse_in_memory_over_limit(external, "vision_encoder", "qnn")  # far under 2 GiB: accepted
    with pytest.raises(InputError, match=r"external.onnx: component vision_encoder is .* GiB with its external data; the qnn backend cannot build it") as err:
        refuse_in_memory_over_limit(external, "vision_encoder", "qnn", limit=WEIGHT_BYTES // 2)
    assert err.value.exit_code == ExitCode.BAD_INPUT
