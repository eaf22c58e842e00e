"""The transform slot: the registry, strict recipe names, and GPTQ as a transform with the results it had inside the build."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgecompile.stages.context import recorded_recipe
from onnx import numpy_helper

from edgecompile.errors import InputError
from edgecompile.transforms.registry import get_transform, transform_names
from tests.llava_build import built_llava


def test_registry_lists_gptq_and_refuses_unknown_names() -> None:
    assert "gptq" in transform_names()
    transform = get_transform("gptq")
    assert transform.name == "gptq" and transform.needs_activations
    with pytest.raises(InputError, match="unknown transform 'smoothquant-typo'"):
        get_transform("smoothquant-typo")


def test_recipe_with_unknown_transform_is_refused_with_file_and_field(tmp_path: Path) -> None:
    from recipe_files import write_recipe

    from edgecompile.config.recipe import load_recipe

    path = write_recipe(tmp_path, extra="quantization: {weight_transforms: [gptq, smoothqant]}\n")
    with pytest.raises(InputError, match=r"tiny\.yaml.*weight_transforms.*smoothqant"):
        load_recipe(path)


def test_without_int4_entries_gptq_is_skipped_and_writes_no_graph(build_copy: Path) -> None:
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    recipe = recorded_recipe(build_copy)
    recipe.write_text(recipe.read_text() + "quantization: {weight_transforms: [gptq]}\n")
    results = {r.stage: r for r in run_until(BuildContext.open(build_copy), "transform")}
    assert results["transform"].skipped is False  # the transform list changed
    out = results["transform"].output
    assert out.transforms == ["gptq"] and out.layers == [] and out.prequantized == {}
    assert not list((build_copy / "transform").glob("*.onnx"))  # a CLIP has no INT4 linears: nothing to round


@pytest.fixture(scope="module")
def gptq_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    model, build, code, output = built_llava(tmp_path_factory.mktemp("llava"))
    assert code in (0, 1), output
    return model, build


def test_gptq_transform_records_layers_and_rewrites_the_float_decoder(gptq_build: tuple[Path, Path]) -> None:
    _, build = gptq_build
    record = json.loads((build / "transform" / "transforms.json").read_text())
    assert record["transforms"] == ["gptq"] and record["graphs"]["decoder"] == "transform/decoder.onnx"
    assert record["graphs"]["vision_encoder"] == "export/vision_encoder.onnx"  # no INT4 there: not copied
    plan = json.loads((build / "annotate" / "plan.json").read_text())
    int4 = {e["node"] for e in plan["entries"] if e["component"] == "decoder" and e["precision"] == "int4"}
    layers = {row["node"]: row for row in record["layers"]}
    assert set(layers) == int4 and int4
    assert all(0.0 < row["relative_change"] < 0.5 and row["bits"] == 4 for row in layers.values())
    exported = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(build / "export" / "decoder.onnx")).graph.initializer}
    transformed = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(build / "transform" / "decoder.onnx")).graph.initializer}
    for row in layers.values():
        before, after = exported[row["weight"]], transformed[row["weight"]]
        change = np.linalg.norm(after - before) / np.linalg.norm(before)
        assert change == pytest.approx(row["relative_change"], rel=1e-4)
        assert len(np.unique(after[:16, 0])) <= 16  # one INT4 block of one column: at most 16 levels


def test_gptq_codes_in_the_artifact_equal_the_reference_loop_run_directly(gptq_build: tuple[Path, Path]) -> None:
    """What the build packed is bit-identical to the reference GPTQ loop on the exported decoder with H = X Xᵀ from calibration."""
    from edgecompile.data.sources import calibration_samples
    from edgecompile.stages.context import BuildContext
    from edgecompile.transforms.vlmq_gptq import gptq_weight, matmul_nbits
    from edgecompile.transforms.vlmq_hessian import weighted_hessians

    _, build = gptq_build
    ctx = BuildContext.open(build)
    plan = json.loads((build / "annotate" / "plan.json").read_text())
    entries = [e for e in plan["entries"] if e["component"] == "decoder" and e["precision"] == "int4" and e["op_type"] == "MatMul"]
    int4 = {e["node"] for e in entries}
    block, symmetric = entries[0]["block_size"], entries[0]["symmetric"]
    model = onnx.load(str(build / "export" / "decoder.onnx"))
    nodes = {n.name: n for n in model.graph.node if n.name in int4}
    consumers: dict[str, list[str]] = {}
    for name, node in nodes.items():
        consumers.setdefault(node.input[0], []).append(name)
    recipe = ctx.recipe.calibration
    hessians = weighted_hessians(model, consumers, lambda: ctx.adapter.calibration_feeds(ctx.loaded(), calibration_samples(recipe.set, recipe.samples), "decoder"), lambda sample, node: None)
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    direct_nodes, direct_inits = {}, {}
    for name, node in nodes.items():
        new, inits = matmul_nbits(node, gptq_weight(weights[node.input[1]], hessians[name], 4, block, symmetric), 4, block, symmetric)
        direct_nodes[new.name] = new
        direct_inits.update({t.name: numpy_helper.to_array(t) for t in inits})
    artifact = onnx.load(str(build / "build" / "decoder.onnx"))
    artifact_inits = {i.name: numpy_helper.to_array(i) for i in artifact.graph.initializer}
    compared = 0
    for node in artifact.graph.node:
        if node.op_type != "MatMulNBits" or node.name not in direct_nodes:
            continue
        n_attr = {a.name: a.i for a in node.attribute}["N"]
        if n_attr != {a.name: a.i for a in direct_nodes[node.name].attribute}["N"]:
            continue  # the CPU fusion packed K and V into this Q projection
        for ours, theirs in zip(node.input[1:], direct_nodes[node.name].input[1:], strict=True):
            np.testing.assert_array_equal(artifact_inits[ours], direct_inits[theirs])
        compared += 1
    assert compared >= 2
