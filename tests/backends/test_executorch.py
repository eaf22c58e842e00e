"""ExecuTorch + XNNPACK backend: availability, a tiny CLIP build whose .pte files execute here, planned INT8
linears quantized in the written program, and a tiny LLaVA KV-cache decoder generating through the runner."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.backends.conftest import write_recipe

HAVE_EXECUTORCH = importlib.util.find_spec("executorch") is not None and importlib.util.find_spec("executorch.runtime") is not None
needs_executorch = pytest.mark.skipif(not HAVE_EXECUTORCH, reason="needs executorch (pip install executorch)")

CLIP_RECIPE = """precision_preset: vlm-default
calibration: {set: synthetic, samples: 8, method: minmax}
eval: {set: synthetic, samples: 8, latency_runs: 3, warmup_runs: 1}
comparison: {max_iterations: 2, layer_samples: 1}
gates:
  - {name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.99}
  - {name: text drift, metric: drift.text_encoder.text_embeds.cosine_mean, min: 0.99}
budget_gates: false
"""


def test_package_import_does_not_import_executorch() -> None:
    code = "import sys, edgecompile.backends.executorch as p; b = p.create_backend(); assert b.name == 'executorch'; print('executorch' in sys.modules, 'torchao' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["False", "False"]


def test_unavailable_without_executorch(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecompile.backends.base import Availability
    from edgecompile.backends.executorch import create_backend

    for name in [m for m in sys.modules if m == "executorch" or m.startswith("executorch.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "executorch", None)
    assert create_backend().availability() == Availability(False, False, "executorch is not installed (pip install executorch)")


def test_registered_by_name() -> None:
    from edgecompile.backends.registry import backend_names, get_backend

    assert "executorch" in backend_names() and get_backend("executorch").name == "executorch"


@needs_executorch
def test_available_here() -> None:
    from edgecompile.backends.executorch import create_backend

    available = create_backend().availability()
    assert available.can_build and available.can_run, available.reason


@pytest.fixture(scope="module")
def clip_build(tiny_clip: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    if not HAVE_EXECUTORCH:
        pytest.skip("needs executorch (pip install executorch)")
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    root = tmp_path_factory.mktemp("executorch-clip")
    ctx = BuildContext.create(write_recipe(root, "android-arm64-cpu", CLIP_RECIPE, "et-clip"), str(tiny_clip), root / "build")
    run_until(ctx, "validate")
    return ctx


@needs_executorch
def test_clip_pte_executes_with_low_drift(clip_build) -> None:  # noqa: ANN001
    report = json.loads(clip_build.path("validate", "report.json").read_text())
    m = report["metrics"]
    assert sorted(report["artifacts"].values()) == ["build/text_encoder.pte", "build/vision_encoder.pte"]
    assert report["where"]["executed"] is True and report["where"]["backend"] == "executorch"
    # ExecuTorch's own runtime, but on x86-64 for an aarch64 target: latency is labelled, not the device's.
    assert report["where"]["context"] == "other_arch" and "not the aarch64 device's" in report["where"]["description"]
    assert m["drift.vision_encoder.image_embeds.cosine_mean"] > 0.99 and m["drift.text_encoder.text_embeds.cosine_mean"] > 0.99
    assert m["latency.vision_encoder.p50_ms"] > 0 and m["latency.text_encoder.p50_ms"] > 0 and m["size.compression_ratio"] > 2.0
    assert report["verdict"] == "pass", report["gates"]
    artifact = json.loads(clip_build.path("build", "artifact.json").read_text())
    assert min(artifact["extra"]["parity_cosine"].values()) > 0.99
    assert any("not the aarch64 device's" in n for n in artifact["notes"])


@needs_executorch
def test_planned_int8_linears_are_quantized_in_the_program(clip_build) -> None:  # noqa: ANN001
    from edgecompile.backends.executorch.program_info import program_summary
    from edgecompile.plan.plan import PrecisionPlan

    plan = PrecisionPlan.load(clip_build.path("build", "plan.effective.json"))
    for component in ("vision_encoder", "text_encoder"):
        planned_int8 = sum(1 for e in plan.for_component(component) if e.precision == "int8")
        floats = sum(1 for e in plan.for_component(component) if e.weight is not None and not e.quantized)
        summary = program_summary(clip_build.path("build", f"{component}.pte"))
        # read back from the .pte: XNNPACK INT8 per-channel weights for exactly the planned linears;
        # the patch-embedding conv and the projector (FP16 in the plan -> float on this target) stay FP32.
        assert summary["weights"] == {"int8": planned_int8, "fp32": floats}, summary
        assert planned_int8 == 12 and summary["delegates"] >= 1


@needs_executorch
def test_runner_names_batches_and_bounds(clip_build) -> None:  # noqa: ANN001
    import onnx

    from edgecompile.backends.base import Artifact
    from edgecompile.backends.executorch import create_backend
    from edgecompile.errors import InputError

    build = clip_build.path("build")
    run = create_backend().runner(build, Artifact.load(build))
    pixels = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    batched = run("vision_encoder", {"pixel_values": pixels})
    onnx_outputs = [o.name for o in onnx.load(str(clip_build.path("export", "vision_encoder.onnx"))).graph.output]
    assert list(batched) == onnx_outputs == ["image_embeds"] and batched["image_embeds"].shape == (3, 16)
    single = run("vision_encoder", {"pixel_values": pixels[1:2]})["image_embeds"]
    np.testing.assert_allclose(batched["image_embeds"][1:2], single, rtol=1e-5, atol=1e-5)
    too_long = np.ones((1, 17), np.int64)
    with pytest.raises(InputError, match="accepts"):
        run("text_encoder", {"input_ids": too_long, "attention_mask": too_long})


# --- the tiny LLaVA decoder with its KV cache -----------------------------------------------------------

LLAVA_RECIPE = """precision_preset: vlm-default
quantization: {int4_block_size: 16}
calibration: {set: synthetic, samples: 2, method: minmax}
eval: {set: synthetic, samples: 2, latency_runs: 3, warmup_runs: 0}
gates:
  - {name: token agreement, metric: generation.token_agreement, min: 0.9}
budget_gates: false
"""


@pytest.fixture(scope="module")
def llava_decoder(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(context, artifact dir, artifact) with only the decoder built as a .pte (export..calibrate by the pipeline)."""
    if not HAVE_EXECUTORCH:
        pytest.skip("needs executorch (pip install executorch)")
    import onnx

    from edgecompile.backends.base import BuildInputs
    from edgecompile.backends.executorch import create_backend
    from edgecompile.plan.plan import PrecisionPlan
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until
    from tests.tiny_llava import save_tiny_llava

    root = tmp_path_factory.mktemp("executorch-llava")
    model = save_tiny_llava(root / "llava", layers=1)
    ctx = BuildContext.create(write_recipe(root, "android-arm64-cpu", LLAVA_RECIPE, "et-llava"), str(model), root / "build")
    run_until(ctx, "annotate")
    backend = create_backend()
    exported = {"decoder": ctx.path("export", "decoder.onnx")}
    plan = backend.adapt_plan(PrecisionPlan.load(ctx.path("annotate", "plan.json")), ctx.target, {}, {"decoder": onnx.load(str(exported["decoder"]), load_external_data=False)})
    out = root / "artifact"
    out.mkdir()
    artifact = backend.build(BuildInputs(exported, plan, {}, ctx.target, ctx.recipe, out, None, model_dir=ctx.model_dir, adapter=ctx.adapter))
    artifact.save(out)
    return ctx, out, artifact


@needs_executorch
def test_llava_decoder_int4_program(llava_decoder) -> None:  # noqa: ANN001
    from edgecompile.backends.executorch.program_info import program_summary

    _, out, artifact = llava_decoder
    assert artifact.components == {"decoder": "decoder.pte"}
    summary = program_summary(out / "decoder.pte")
    assert summary["weights"].get("int4") == 7, summary  # q/k/v/o + gate/up/down of one layer: 8da4w, INT4 per block 16
    assert summary["weights"].get("int8") == 1, summary  # lm_head: INT8 per channel (8da8w)
    bounds = artifact.extra["io"]["decoder"]["bounds"]
    assert bounds["past_length"][0] == 0 and bounds["sequence"][0] == 1 and bounds["total_length"][1] == artifact.extra["max_length"] == 256
    assert any("8da4w" in n for n in artifact.notes) and artifact.extra["parity_cosine"]["decoder"] > 0.95


@needs_executorch
def test_llava_decoder_kv_cache_follows_the_reference(llava_decoder) -> None:  # noqa: ANN001
    """Prefill, then decode steps each feeding back the .pte's own cache, on the reference's greedy tokens.

    The tiny random LLaVA has nearly flat logits, so INT4 rounding alone flips some of its greedy
    tokens (shapes-llava's token agreement is in its build report); the cache handling is checked
    exactly here: every step's logits stay close to the ONNX reference's and the greedy tokens mostly agree.
    """
    from PIL import Image

    from edgecompile.backends.executorch import create_backend
    from edgecompile.models.decoder_export import CacheLayout
    from edgecompile.runtime.generate import generate, splice_image_features
    from edgecompile.runtime.onnx_cpu import cpu_runner

    ctx, out, artifact = llava_decoder
    adapter, loaded = ctx.adapter, ctx.loaded()
    reference = cpu_runner(ctx.path("export"), {c: f"{c}.onnx" for c in ("vision_encoder", "embed_tokens", "decoder")})
    decoder = create_backend().runner(out, artifact)
    spec = adapter.generation_spec(loaded.config)
    layout = CacheLayout.from_text_config(loaded.config.get_text_config(decoder=True))

    def mixed(component: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # vision and embeddings from the reference
        return decoder(component, feeds) if component == "decoder" else reference(component, feeds)

    agree = total = 0
    for color, question in (((200, 30, 30), "what color is the shape ?"), ((30, 30, 200), "what shape is the shape ?")):
        ids, pixels = adapter.encode(loaded, Image.new("RGB", (32, 32), color), question)
        want = generate(reference, spec, ids, pixels, 8).tokens
        got = generate(mixed, spec, ids, pixels, 8).tokens
        total += len(want)
        agree += sum(int(a == b) for a, b in zip(want, got))
        # teacher-forced on the reference's tokens: the same inputs at every step, each side keeping its own cache
        embeds = splice_image_features(ids, reference("embed_tokens", {"input_ids": ids})["inputs_embeds"], reference("vision_encoder", {"pixel_values": pixels})["image_features"], spec.image_token_id)
        caches = {"ref": layout.empty_past(), "pte": layout.empty_past()}
        done = 0
        for step, token in enumerate([None, *want[:-1]]):
            step_embeds = embeds if token is None else reference("embed_tokens", {"input_ids": np.array([[token]], np.int64)})["inputs_embeds"]
            n = step_embeds.shape[1]
            feeds = {"inputs_embeds": step_embeds, "attention_mask": np.ones((1, done + n), np.int64), "position_ids": spec.position_ids(done, n)}
            logits = {}
            for side, run in (("ref", reference), ("pte", decoder)):
                outputs = run("decoder", {**feeds, **caches[side]})
                logits[side] = outputs["logits"][0, -1]
                caches[side] = {p: outputs[q] for p, q in zip(layout.past_names(), layout.present_names(), strict=True)}
            assert caches["pte"]["past_key_0"].shape[2] == done + n
            cosine = float(logits["ref"] @ logits["pte"] / (np.linalg.norm(logits["ref"]) * np.linalg.norm(logits["pte"])))
            assert cosine > 0.97, (step, cosine)
            done += n
    assert total > 0 and agree / total >= 0.5, (agree, total)
