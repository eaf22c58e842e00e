"""TensorRT backend: the explicit-quantization ONNX rules, its drift on ONNX Runtime CPU, and the engine (GPU only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.backends.conftest import write_recipe

RECIPE = """opset: 21
rules:
  - {match: {component: text_encoder, role: mlp}, precision: int4, block_size: 16, why: "test: INT4 block DQ on the text-tower MLP"}
quantization: {activation_type: int8, activation_symmetric: true, weight_type: int8}
calibration: {set: synthetic, samples: 8, method: minmax}
eval: {set: synthetic, samples: 16, latency_runs: 3, warmup_runs: 1}
gates:
  - {name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.98}
  - {name: text drift, metric: drift.text_encoder.text_embeds.cosine_mean, min: 0.97}
budget_gates: false
"""


@pytest.fixture(scope="module")
def trt_build(tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    root = tmp_path_factory.mktemp("trt")
    ctx = BuildContext.create(write_recipe(root, "jetson-orin-nano", RECIPE, "trt-test"), str(tiny_clip), root / "build")
    run_until(ctx, "validate")
    return ctx


def _graph(ctx, component: str) -> onnx.ModelProto:  # noqa: ANN001
    return onnx.load(str(ctx.path("build", f"{component}.onnx")))


def test_zero_points_are_zero_and_int8(trt_build) -> None:  # noqa: ANN001
    for component in ("vision_encoder", "text_encoder"):
        model = _graph(trt_build, component)
        consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert len(qdq) > 10
        for node in qdq:
            if len(node.input) > 2 and node.input[2]:
                zero = consts[node.input[2]]
                assert not np.any(zero.astype(np.int32)), node.name
                assert zero.dtype in (np.int8, np.dtype("int4")) or str(zero.dtype) == "int4", (node.name, zero.dtype)


def test_int4_block_dequantize_on_planned_linears(trt_build) -> None:  # noqa: ANN001
    model = _graph(trt_build, "text_encoder")
    int4 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT4}
    blocks = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int4]
    assert len(blocks) == 4  # fc1, fc2 in each of the 2 layers
    assert all(next(a.i for a in n.attribute if a.name == "block_size") == 16 for n in blocks)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 21


def test_residual_adds_not_quantized_and_weights_per_channel(trt_build) -> None:  # noqa: ANN001
    from edgecompile.backends.tensorrt.explicit_quant import check_explicit_quantization
    from edgecompile.plan.roles import classify_graph

    for component in ("vision_encoder", "text_encoder"):
        exported = onnx.load(str(trt_build.path("export", f"{component}.onnx")))
        residual = {i.name for i in classify_graph(exported) if i.role == "residual_add"}
        assert residual, "the tiny CLIP has residual adds"
        check = check_explicit_quantization(_graph(trt_build, component), residual)
        assert check.problems == []
        assert check.per_channel_weights >= 8  # text tower: 8 INT8 linears (4 MLP linears are INT4, the projector FP16)


def test_rules_catch_an_ort_cpu_style_graph(trt_build) -> None:  # noqa: ANN001
    """The same check rejects asymmetric uint8 activations (what ORT CPU builds): the check can fail."""
    from edgecompile.backends.common.onnx_quant import QdqSettings, insert_qdq
    from edgecompile.backends.tensorrt.explicit_quant import check_explicit_quantization
    from edgecompile.calibration.ranges import load_ranges
    from edgecompile.plan.plan import PrecisionPlan

    plan = PrecisionPlan.load(trt_build.path("build", "plan.effective.json"))
    ranges = load_ranges(trt_build.path("calibrate", "ranges.json"))
    model = insert_qdq(onnx.load(str(trt_build.path("export", "vision_encoder.onnx"))), "vision_encoder", plan.for_component("vision_encoder"), ranges["vision_encoder"], QdqSettings())
    problems = check_explicit_quantization(model, set()).problems
    assert any("zero point" in p for p in problems) and any("uint8" in p for p in problems)


def test_stand_in_labelled_and_engine_script_written(trt_build) -> None:  # noqa: ANN001
    from edgecompile.backends.tensorrt.backend import STAND_IN, tensorrt_status

    artifact = json.loads(trt_build.path("build", "artifact.json").read_text())
    script = trt_build.path("build", "build_engine.sh").read_text()
    assert script.count("trtexec --onnx=") == 2 and "--stronglyTyped" in script and "--maxShapes=pixel_values:8x3x32x32" in script
    version, gpu, _ = tensorrt_status()
    if not (version and gpu):
        assert STAND_IN in artifact["notes"] and "stand-in" in artifact["where"]


def test_drift_on_onnx_runtime_cpu(trt_build) -> None:  # noqa: ANN001
    report = json.loads(trt_build.path("validate", "report.json").read_text())
    metrics = report["metrics"]
    assert metrics["drift.vision_encoder.image_embeds.cosine_mean"] >= 0.98
    assert metrics["drift.text_encoder.text_embeds.cosine_mean"] >= 0.97
    assert report["verdict"] == "pass" and report["where"]["executed"] is True


def test_engine_cache_key_changes_with_each_part(tmp_path: Path) -> None:
    from edgecompile.backends.tensorrt.backend import engine_cache_key

    graph = tmp_path / "m.onnx"
    graph.write_bytes(b"graph")
    base = engine_cache_key(graph, "{}", "10.9", "Orin")
    assert len({base, engine_cache_key(graph, "{ }", "10.9", "Orin"), engine_cache_key(graph, "{}", "10.10", "Orin"), engine_cache_key(graph, "{}", "10.9", "H100")}) == 4


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_engine_builds_and_matches_onnx(trt_build) -> None:  # noqa: ANN001
    pytest.importorskip("tensorrt", reason="needs the tensorrt package (and an NVIDIA GPU)")
    from edgecompile.backends.tensorrt.backend import shape_profile, tensorrt_status
    from edgecompile.backends.tensorrt.backend import build_engine
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    version, gpu, reason = tensorrt_status()
    if not gpu:
        pytest.skip(reason)
    onnx_path = trt_build.path("build", "vision_encoder.onnx")
    engine = trt_build.path("build", "test_vision.engine")
    build_engine(onnx_path, engine, shape_profile(onnx.load(str(onnx_path)), {}, None), 1 << 30, trt_build.path("build", "timing.cache"))
    feeds = {"pixel_values": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    with TrtRunner(EngineFromBytes(BytesFromPath(str(engine)))) as runner:
        got = runner.infer(feeds)["image_embeds"]
    from edgecompile.runtime.onnx_cpu import cpu_session

    want = cpu_session(onnx_path).run(None, feeds)[0]
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99
