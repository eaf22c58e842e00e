"""The qnn backend on the HTP emulator that ships in onnxruntime-qnn's Linux x86-64 wheel.

Small hand-built graphs keep most tests fast; one test compiles the tiny CLIP end to end (slow).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install 'edgecompile[qnn]'); the qnn backend cannot build or run")

from edgecompile.backends.base import BuildInputs  # noqa: E402
from edgecompile.backends.qnn.backend import QnnBackend, qnn_options  # noqa: E402
from edgecompile.backends.qnn.quant import qdq_types  # noqa: E402
from edgecompile.backends.qnn.session import EP_NAME, htp_session, provider_options  # noqa: E402
from edgecompile.config.recipe import Recipe  # noqa: E402
from edgecompile.config.target import Target  # noqa: E402
from edgecompile.errors import InputError, StageError  # noqa: E402
from edgecompile.plan.plan import PrecisionPlan  # noqa: E402

pytestmark = pytest.mark.qnn

HIDDEN, TOKENS = 32, 8  # attention map 8x8: square, so Det applies


def _block(odd_op: str | None = None, seed: int = 0) -> onnx.ModelProto:
    """A ViT-style block: LayerNorm -> q/k/v linears -> softmax attention -> out linear -> residual."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32), f"w_{n}") for n in "qkvo"]
    inits += [numpy_helper.from_array(rng.standard_normal(HIDDEN).astype(np.float32) * 0.1, f"b_{n}") for n in "qkvo"]
    inits += [numpy_helper.from_array(np.ones(HIDDEN, np.float32), "ln_g"), numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "ln_b"), numpy_helper.from_array(np.array(HIDDEN**-0.5, np.float32), "scale")]
    nodes = [helper.make_node("LayerNormalization", ["x", "ln_g", "ln_b"], ["ln"], name="ln", axis=-1)]
    for n in "qkv":
        nodes += [helper.make_node("MatMul", ["ln", f"w_{n}"], [f"{n}_mm"], name=f"{n}_proj"), helper.make_node("Add", [f"{n}_mm", f"b_{n}"], [n], name=f"{n}_bias")]
    nodes += [
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores_raw"], name="scores"),
        helper.make_node("Mul", ["scores_raw", "scale"], ["scores"], name="scale_scores"),
        helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx"], name="attend"),
        helper.make_node("MatMul", ["ctx", "w_o"], ["o_mm"], name="o_proj"),
        helper.make_node("Add", ["o_mm", "b_o"], ["o"], name="o_bias"),
        helper.make_node("Add", ["x", "o"], ["y" if odd_op is None else "res"], name="residual"),
    ]
    if odd_op is not None:  # a scalar per batch row from the (square) attention map, added back
        inits.append(numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "odd_shape"))
        nodes += [
            helper.make_node(odd_op, ["probs"], ["odd_out"], name="odd"),
            helper.make_node("Reshape", ["odd_out", "odd_shape"], ["odd_b"], name="odd_reshape"),
            helper.make_node("Add", ["res", "odd_b"], ["y"], name="odd_add"),
        ]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", TOKENS, HIDDEN])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", TOKENS, HIDDEN])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, TOKENS, HIDDEN)).astype(np.float32)} for _ in range(count)]


def _target(**backend_options: object) -> Target:
    return Target(schema_version=1, name="snapdragon-test", description="test", tier="mobile", backend="qnn", native_precisions=("fp16", "int8"), backend_options=backend_options)


def _build(tmp_path: Path, model: onnx.ModelProto, *, recipe_options: dict | None = None, quantization: dict | None = None) -> tuple[Path, object]:
    source = tmp_path / "block.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "build"
    out.mkdir()
    recipe = Recipe(schema_version=1, name="r", target="snapdragon-test", backend_options=recipe_options or {}, quantization=quantization or {})
    inputs = BuildInputs({"block": source}, PrecisionPlan((), "test"), {}, _target(soc_model=57, htp_arch=75), recipe, out, lambda component: iter(_feeds(16, seed=1)))
    return out, QnnBackend().build(inputs)


def _float(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, f)[0] for f in feeds])


def _psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    return float(10 * np.log10(np.abs(reference).max() ** 2 / np.mean((reference - candidate) ** 2)))


def test_availability_and_registry() -> None:
    from edgecompile.backends.registry import backend_names

    assert "qnn" in backend_names()
    available = QnnBackend().availability()
    assert available.can_build and available.can_run, available.reason
    assert "HTP" in available.reason


def test_qdq_types_epcontext_and_accuracy(tmp_path: Path) -> None:
    model = _block()
    out, artifact = _build(tmp_path, model)
    summary = artifact.extra["components"]["block"]
    qdq = onnx.load(str(out / summary["qdq"]))
    types = qdq_types(qdq)
    assert types["activations"] == ["UINT16"] and types["weights"] == ["UINT8"], types
    assert summary["placement"]["fallback"] == []
    assert artifact.where == "HTP emulator on x86-64" and any("not representative" in n for n in artifact.notes)

    ctx_path = out / artifact.components["block"]
    ctx = onnx.load(str(ctx_path))
    assert [n.op_type for n in ctx.graph.node] == ["EPContext"]

    eval_feeds = _feeds(8, seed=7)
    reference = _float(model, eval_feeds)
    run = QnnBackend().runner(out, artifact)
    htp = np.concatenate([run("block", f)["y"] for f in eval_feeds])
    batched = run("block", {"x": np.concatenate([f["x"] for f in eval_feeds])})["y"]  # the runner loops batch rows
    np.testing.assert_array_equal(htp, batched)
    cosine = float((reference * htp).sum() / np.linalg.norm(reference) / np.linalg.norm(htp))
    assert cosine > 0.999 and _psnr(reference, htp) > 40.0, (cosine, _psnr(reference, htp))

    # The EPContext model and the QDQ model give the same numbers on the emulated HTP.
    session = htp_session(out / summary["qdq"], provider_options(57, 75), strict=True)
    assert session.get_providers()[0] == EP_NAME
    np.testing.assert_allclose(session.run(None, eval_feeds[0])[0], htp[:1], rtol=0, atol=1e-6)


def test_eight_bit_activations_lose_accuracy(tmp_path: Path) -> None:
    """A8 (when the recipe asks) is measurably worse than the A16 default on the same block."""
    model = _block(seed=3)
    eval_feeds = _feeds(8, seed=9)
    reference = _float(model, eval_feeds)
    psnr = {}
    for name, quantization in (("a16", {}), ("a8", {"activation_type": "uint8"})):
        folder = tmp_path / name
        folder.mkdir()
        out, artifact = _build(folder, model, quantization=quantization)
        assert qdq_types(onnx.load(str(out / artifact.extra["components"]["block"]["qdq"])))["activations"] == (["UINT16"] if name == "a16" else ["UINT8"])
        run = QnnBackend().runner(out, artifact)
        psnr[name] = _psnr(reference, np.concatenate([run("block", f)["y"] for f in eval_feeds]))
    assert psnr["a16"] > psnr["a8"] + 5.0, psnr  # measured 54.4 vs 46.7 dB (the residual carries most of y)


def test_fallback_is_reported_and_the_recipe_decides(tmp_path: Path) -> None:
    model = _block(odd_op="Det")  # Det has no HTP kernel: QNN EP leaves it to the CPU EP
    strict = tmp_path / "strict"
    strict.mkdir()
    with pytest.raises(StageError, match=r"odd \(Det\)") as caught:
        _build(strict, model)
    assert "allow_cpu_fallback" in str(caught.value)

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    out, artifact = _build(allowed, model, recipe_options={"allow_cpu_fallback": ["Det"]})
    placement = artifact.extra["components"]["block"]["placement"]
    assert placement["fallback_op_types"] == ["Det"]
    assert ("odd", "Det") in {(f["node"], f["op_type"]) for f in placement["fallback"]}
    assert any("CPU EP" in n for n in artifact.notes)
    assert (out / artifact.components["block"]).is_file()


def test_backend_options_are_validated() -> None:
    with pytest.raises(InputError, match=r"targets/snapdragon-test.yaml: backend_options.htp_arch"):
        qnn_options(_target(htp_arch=42))
    with pytest.raises(InputError, match=r"backend_options.colour"):
        qnn_options(_target(colour="red"))
    assert qnn_options(_target(allow_cpu_fallback=["Det"])).allows(["Det"])


def test_shipped_target_and_recipe_load() -> None:
    from edgecompile.config.recipe import load_recipe

    repo = Path(__file__).resolve().parents[2]
    resolved = load_recipe(repo / "recipes" / "snapdragon-8-gen-3.yaml")
    assert resolved.target.backend == "qnn" and resolved.target.tier == "mobile"
    assert (resolved.target.memory_budget_mb, resolved.target.latency_budget_ms) == (8192, 80.0)
    options = qnn_options(resolved.target, resolved.recipe)
    assert (options.soc_model, options.htp_arch, options.allow_cpu_fallback) == (57, 75, False)


@pytest.mark.slow
def test_tiny_clip_on_the_htp_emulator(tmp_path: Path) -> None:
    """export -> build -> validate the tiny CLIP: both towers fully on HTP, drift within thresholds."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny_models import save_tiny_clip

    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "targets").mkdir()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "targets" / "snapdragon-8-gen-3.yaml").write_text((repo / "targets" / "snapdragon-8-gen-3.yaml").read_text())
    (tmp_path / "recipes" / "clip-htp.yaml").write_text(
        "schema_version: 1\nname: clip-htp\ntarget: snapdragon-8-gen-3\n"
        "calibration: {method: minmax, set: synthetic, samples: 8}\n"
        "eval: {set: synthetic, samples: 16, latency_runs: 3, warmup_runs: 1}\nbudget_gates: false\nallow_no_gates: true  # this test reads the metrics, not the verdict\n"
    )
    model = save_tiny_clip(tmp_path / "clip")
    ctx = BuildContext.create(tmp_path / "recipes" / "clip-htp.yaml", str(model), tmp_path / "build")
    run_until(ctx, "validate")
    report = json.loads(ctx.path("validate", "report.json").read_text())
    metrics = report["metrics"]
    assert report["where"]["description"] == "HTP emulator on x86-64"
    assert metrics["drift.vision_encoder.image_embeds.cosine_mean"] > 0.999
    assert metrics["drift.text_encoder.text_embeds.cosine_mean"] > 0.99
    artifact = json.loads(ctx.path("build", "artifact.json").read_text())
    for component, summary in artifact["extra"]["components"].items():
        assert summary["placement"]["fallback"] == [], component
        assert summary["qdq_types"]["activations"] == ["UINT16"] and summary["qdq_types"]["weights"] == ["UINT8"], component
    plan = json.loads(ctx.path("build", "plan.effective.json").read_text())
    softmax = [e for e in plan["entries"] if e["role"] == "softmax"]
    assert softmax and all(e["precision"] == "int16" and e["changed_from"] == "float" for e in softmax)
    assert all(e["precision"] == "int8" for e in plan["entries"] if e["weight"] is not None)

    # The HTP graph preparation is exact: static shapes + rewrites + padding change no output.
    import onnxruntime as ort

    from edgecompile.backends.qnn.backend import pad_feeds
    from edgecompile.backends.qnn.graph import prepare, static_shapes

    exported = onnx.load(str(ctx.path("export", "text_encoder.onnx")))
    shapes = static_shapes(exported, None, "text_encoder")
    prepared, notes = prepare(exported, shapes, -100.0)
    assert shapes["input_ids"] == [1, 16] and any("GatherND" in n for n in notes)
    float_run = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    prepared_run = ort.InferenceSession(prepared.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 4, 5, 7, 11, 3]])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    np.testing.assert_allclose(prepared_run.run(None, pad_feeds(feeds, shapes))[0], float_run.run(None, feeds)[0], rtol=0, atol=1e-5)


def test_adapt_plan_maps_float_and_int4_to_what_htp_executes() -> None:
    from edgecompile.plan.plan import PlanEntry

    def entry(node: str, op: str, role: str, weight: str | None, precision: str) -> PlanEntry:
        return PlanEntry("decoder", node, op, role, "", weight, precision, None, None, True, "test", "test")

    plan = PrecisionPlan((entry("q", "MatMul", "attn_qkv", "wq", "int4"), entry("sm", "Softmax", "softmax", None, "float"), entry("proj", "Gemm", "projector", "wp", "fp16"), entry("r", "Reshape", "other", None, "float")), "vlm-default")
    adapted = {e.node: e for e in QnnBackend().adapt_plan(plan, _target(), {}, {}).entries}
    assert adapted["q"].precision == "int8" and "MatMulNBits" in adapted["q"].why
    assert adapted["sm"].precision == "int16" and adapted["proj"].precision == "int8"
    assert adapted["r"].precision == "float"  # data movement has no precision of its own
