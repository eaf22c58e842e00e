"""Generative VLMs (KV-cache decoders) beyond ORT CPU: refused early where unsupported (QNN),
TensorRT profiles derived from the model, CoreML conversion of the decoder and of SigLIP."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.backends.conftest import REPO, write_recipe

LLAVA = "shapes-llava"


# --- refusals before export ---------------------------------------------------------------------

def test_qnn_refuses_what_its_static_decoder_cannot_build_before_export(tmp_path: Path) -> None:
    """shapes-llava builds on HTP now (tests/backends/test_qnn_decoder.py); a recipe whose weight transforms
    the re-exported static decoder would drop is refused at binding, before anything is exported."""
    from edgecompile.errors import ExitCode, InputError
    from edgecompile.stages.context import BuildContext

    recipe = write_recipe(tmp_path, "snapdragon-8-gen-3", "quantization: {weight_transforms: [smoothquant]}\n", "snap-transforms")
    out = tmp_path / "build"
    started = time.perf_counter()
    with pytest.raises(InputError) as refused:
        BuildContext.create(recipe, LLAVA, out)
    message = str(refused.value)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert "snapdragon-8-gen-3" in message and "qnn" in message and "weight_transforms" in message and "static" in message
    assert not out.exists()  # nothing exported, calibrated or even created
    assert time.perf_counter() - started < 30  # binding only: no export ran (export alone takes ~20 s)


def test_qnn_preflight_accepts_dual_encoders() -> None:
    from edgecompile.backends.registry import get_backend

    resolved = SimpleNamespace(recipe_path="recipes/x.yaml", target=SimpleNamespace(name="snapdragon-8-gen-3"))
    get_backend("qnn").preflight(SimpleNamespace(family="dual_encoder"), resolved)
    for name in ("ort-cpu", "tensorrt", "coreml", "executorch"):  # the default hook accepts everything
        get_backend(name).preflight(SimpleNamespace(family="generative"), resolved)


# --- TensorRT profiles ------------------------------------------------------------------------

def _decoder_like() -> onnx.ModelProto:
    """The decoder's inputs as exported (inputs_embeds, attention_mask, position_ids, one past pair)."""
    def value(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, dims)

    inputs = [
        value("inputs_embeds", TensorProto.FLOAT, [1, "sequence", 8]),
        value("attention_mask", TensorProto.INT64, [1, "total_length"]),
        value("position_ids", TensorProto.INT64, [1, "sequence"]),
        value("past_key_0", TensorProto.FLOAT, [1, 2, "past_length", 4]),
    ]
    node = helper.make_node("Identity", ["inputs_embeds"], ["logits"])
    graph = helper.make_graph([node], "d", inputs, [value("logits", TensorProto.FLOAT, [1, "sequence", 8])])
    return helper.make_model(graph)


def test_decoder_profile_is_consistent_at_min_opt_max() -> None:
    from edgecompile.backends.tensorrt.profiles import derive_profile

    derived = derive_profile(_decoder_like(), {}, 160)
    for i in range(3):  # TensorRT checks the graph's shape constraints at each point
        seq, total, past = (derived.shapes[n][i] for n in ("inputs_embeds", "attention_mask", "past_key_0"))
        assert total[1] == past[2] + seq[1], (i, seq, total, past)
    assert derived.dims["total_length"] == (1, 80, 160) and derived.dims["past_length"] == (0, 79, 80) and derived.dims["sequence"] == (1, 1, 80)
    assert "max_position_embeddings 160" in derived.sources["sequence"]


def test_options_cap_the_context_and_a_written_dim_wins() -> None:
    from edgecompile.backends.tensorrt.profiles import derive_profile
    from edgecompile.errors import InputError

    derived = derive_profile(_decoder_like(), {"context_length": 64, "prefill_chunk": 16, "trt_profile": {"sequence": [1, 4, 16]}}, 32768)
    assert derived.dims["total_length"] == (1, 16, 64) and derived.dims["past_length"] == (0, 15, 48)
    assert derived.dims["sequence"] == (1, 4, 16) and derived.sources["sequence"] == "backend_options.trt_profile"
    with pytest.raises(InputError, match="prefill_chunk"):
        derive_profile(_decoder_like(), {"prefill_chunk": 200}, 160)
    with pytest.raises(InputError, match="no \\[min, opt, max\\] for dynamic dim 'sequence'"):
        derive_profile(_decoder_like(), {}, None)  # no positions in the config and no context_length: refused, named


@pytest.fixture(scope="module")
def trt_llava(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """shapes-llava through the shipped jetson-orin-nano recipe (its hand-written profile has batch only), up to build."""
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    root = tmp_path_factory.mktemp("trt-llava")
    ctx = BuildContext.create(REPO / "recipes" / "jetson-orin-nano.yaml", LLAVA, root / "build")
    run_until(ctx, "build")
    return ctx


def test_shapes_llava_builds_for_jetson_with_a_derived_profile(trt_llava) -> None:  # noqa: ANN001
    import json

    import onnxruntime as ort

    artifact = json.loads(trt_llava.path("build", "artifact.json").read_text())
    decoder = artifact["extra"]["profiles"]["decoder"]
    assert set(decoder["dims"]) == {"sequence", "total_length", "past_length"}
    assert all(s.startswith("derived") for s in decoder["sources"].values())
    script = trt_llava.path("build", "build_engine.sh").read_text()
    assert "--minShapes=" in script and "past_key_0:1x" in script and "attention_mask:1x160" in script
    model = onnx.load(str(trt_llava.path("build", "decoder.onnx")))
    assert any(n.op_type == "DequantizeLinear" and any(a.name == "block_size" for a in n.attribute) for n in model.graph.node)  # INT4 block DQ
    # The explicit-quantization graph runs at each profile point (the stand-in): the points are valid shapes.
    from edgecompile.backends.tensorrt.backend import shape_profile

    session = ort.InferenceSession(str(trt_llava.path("build", "decoder.onnx")), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    profile = shape_profile(model, {}, 160)
    rng = np.random.default_rng(0)
    for point in range(3):
        feeds = {}
        for name, shapes in profile.items():
            shape = shapes[point]
            feeds[name] = np.ones(shape, np.int64) if "int64" in types[name] else (rng.standard_normal(shape) * 0.02).astype(np.float32)
        seq, past = feeds["inputs_embeds"].shape[1], feeds["past_key_0"].shape[2]
        feeds["position_ids"] = np.arange(past, past + seq, dtype=np.int64).reshape(feeds["position_ids"].shape)
        logits = session.run(["logits"], feeds)[0]
        assert logits.shape[1] == seq and np.isfinite(logits).all()


# --- CoreML -------------------------------------------------------------------------------------

def test_coreml_converts_the_kv_cache_decoder() -> None:
    pytest.importorskip("coremltools", reason="needs coremltools")
    import torch

    from edgecompile.backends.coreml.convert import convert
    from edgecompile.models.registry import adapter_for
    from edgecompile.models.resolve import resolve_model

    torch.set_num_threads(1)
    model_dir = resolve_model(LLAVA)
    adapter = adapter_for(model_dir)
    spec = next(s for s in adapter.components(adapter.load(Path(model_dir))) if s.name == "decoder")
    mlmodel = convert(spec, [], "macOS15", "fp16")
    description = mlmodel.get_spec().description
    assert [i.name for i in description.input] == list(spec.input_names)  # past_key_0..., not torch's past_0...
    assert [o.name for o in description.output] == list(spec.output_names)
    past = next(i for i in description.input if i.name == "past_key_0").type.multiArrayType
    assert past.shapeRange.sizeRanges[2].lowerBound == 1  # the past length is a range dim, not the example's size


def test_tiny_siglip_builds_for_apple_m2(tmp_path: Path) -> None:
    pytest.importorskip("coremltools", reason="needs coremltools")
    from tiny_models import save_tiny_siglip

    from edgecompile.backends.coreml.backend import program_summary
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    model = save_tiny_siglip(tmp_path / "siglip")
    recipe = write_recipe(tmp_path, "apple-m2", "calibration: {set: synthetic, samples: 4, method: minmax}\neval: {set: synthetic, samples: 4, latency_runs: 3, warmup_runs: 1}\nallow_no_gates: true\n", "siglip-m2")
    ctx = BuildContext.create(recipe, str(model), tmp_path / "build")
    run_until(ctx, "build")
    text = program_summary(ctx.path("build", "text_encoder.mlpackage"))  # the tower that held an aten.alias
    vision = program_summary(ctx.path("build", "vision_encoder.mlpackage"))
    assert text["inputs"][0] == "input_ids" and text["outputs"] == ["text_embeds"]
    assert vision["inputs"] == ["pixel_values"] and vision["outputs"] == ["image_embeds"]
    assert text["weights"].get("int8", 0) >= 4 and vision["weights"].get("int8", 0) >= 4  # the plan's INT8 linears compressed
    assert "alias" not in text["ops"]


def test_coreml_runner_pads_an_empty_past_exactly(trt_llava) -> None:  # noqa: ANN001
    """The masked slot the CoreML runner adds for the first prefill changes nothing (checked on the float ONNX decoder)."""
    import onnxruntime as ort

    from edgecompile.backends.coreml.backend import crop_padded_present, pad_empty_past

    session = ort.InferenceSession(str(trt_llava.path("export", "decoder.onnx")), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    feeds = {"inputs_embeds": (rng.standard_normal((1, 5, 128)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, 5), np.int64), "position_ids": np.arange(5, dtype=np.int64)[None]}
    feeds.update({i.name: np.zeros((1, 2, 0, 32), np.float32) for i in session.get_inputs() if i.name.startswith("past_")})
    padded, was = pad_empty_past(feeds)
    assert was and padded["past_key_0"].shape == (1, 2, 1, 32) and padded["attention_mask"].tolist() == [[0, 1, 1, 1, 1, 1]]
    plain = dict(zip(names, session.run(None, feeds), strict=True))
    cropped = crop_padded_present(dict(zip(names, session.run(None, padded), strict=True)))
    for name in names:
        assert cropped[name].shape == plain[name].shape
        assert np.abs(cropped[name] - plain[name]).max() < 1e-4, name
    assert pad_empty_past({**feeds, "past_key_0": np.zeros((1, 2, 3, 32), np.float32)})[1] is False  # a real past: untouched


def test_stand_in_refuses_calls_outside_the_profile(trt_llava) -> None:  # noqa: ANN001
    from edgecompile.backends.base import Artifact
    from edgecompile.backends.tensorrt.backend import TensorRtBackend
    from edgecompile.errors import InputError

    directory = trt_llava.path("build")
    run = TensorRtBackend().runner(directory, Artifact.load(directory))
    past = {f"past_{kind}_{i}": np.zeros((1, 2, 0, 32), np.float32) for i in range(2) for kind in ("key", "value")}
    ok = run("decoder", {"inputs_embeds": np.zeros((1, 80, 128), np.float32), "attention_mask": np.ones((1, 80), np.int64), "position_ids": np.arange(80)[None], **past})
    assert ok["logits"].shape[1] == 80  # a full prefill chunk: inside
    with pytest.raises(InputError, match="outside the engine's optimisation profile"):
        run("decoder", {"inputs_embeds": np.zeros((1, 81, 128), np.float32), "attention_mask": np.ones((1, 81), np.int64), "position_ids": np.arange(81)[None], **past})
