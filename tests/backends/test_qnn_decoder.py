"""The generative VLM on the HTP emulator: static prefill/decode graphs, the runner, refusals.

A tiny LLaVA (tests/tiny_llava.py, Llama decoder with GQA): the static graphs equal the dynamic
float decoder (float, CPU EP); the full build executes on the HTP emulator with CPU fallback
disabled and keeps the float reference's greedy tokens; unsupported cases are refused before export.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.backends.conftest import REPO, write_recipe

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install 'edgecompile[qnn]'); the qnn backend cannot build or run")

pytestmark = pytest.mark.qnn

CONTEXT, CHUNK = 48, 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    from tests.tiny_llava import save_tiny_llava

    from edgecompile.models.registry import adapter_for

    path = save_tiny_llava(tmp_path_factory.mktemp("llava") / "model")
    adapter = adapter_for(path)
    return path, adapter, adapter.load(path)


def _session(path: Path):  # noqa: ANN202
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))


@pytest.fixture(scope="module")
def static_graphs(tiny, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """(layout, paths) of the tiny LLaVA's float prefill/decode graphs, context 48, chunk 16."""
    from edgecompile.backends.qnn.static_decoder import export_static_decoder, layout_for

    _, adapter, loaded = tiny
    layout = layout_for(loaded.config.get_text_config(decoder=True), CONTEXT, CHUNK, -100.0)
    return layout, export_static_decoder(adapter, loaded, layout, tmp_path_factory.mktemp("static"), 18)


def test_static_graphs_equal_the_dynamic_float_decoder(tiny, built, static_graphs) -> None:  # noqa: ANN001
    """Prefill (a prompt longer than one chunk, so two chunks) then decode steps, each side on its own cache."""
    from edgecompile.backends.qnn.static_decoder import DECODE, PREFILL, StaticDecoderRunner
    from edgecompile.models.decoder_export import CacheLayout

    _, _, loaded = tiny
    text = loaded.config.get_text_config(decoder=True)
    layout, paths = static_graphs
    dynamic = _session(built[2] / "export" / "decoder.onnx")  # the float decoder as the export stage wrote it (dynamic shapes)
    graphs = {k: _session(paths[k]) for k in (PREFILL, DECODE)}
    used: list[str] = []
    rotary = np.load(paths["rotary"])
    runner = StaticDecoderRunner(layout, rotary["cos"], rotary["sin"], lambda kind, feeds: graphs[kind](feeds), record=lambda kind, _: used.append(kind))
    cache = CacheLayout.from_text_config(text)
    rng = np.random.default_rng(0)
    past_d, past_s, done, worst = cache.empty_past(), cache.empty_past(), 0, 0.0
    for n in (CHUNK + 4, 1, 1, 1, 3, 1):
        embeds = (rng.standard_normal((1, n, cache.hidden)) * 0.5).astype(np.float32)
        common = {"inputs_embeds": embeds, "attention_mask": np.ones((1, done + n), np.int64), "position_ids": cache.positions(done, n).numpy()}
        want, got = dynamic({**common, **past_d}), runner({**common, **past_s})
        for name in ("logits", *cache.present_names()):
            assert got[name].shape == want[name].shape, name
            worst = max(worst, float(np.abs(got[name] - want[name]).max()))
        past_d = {p: want[q] for p, q in zip(cache.past_names(), cache.present_names(), strict=True)}
        past_s = {p: got[q] for p, q in zip(cache.past_names(), cache.present_names(), strict=True)}
        done += n
    assert worst <= 1e-4, worst
    assert used[:2] == [PREFILL, PREFILL] and DECODE in used  # the long prompt took two prefill chunks


def test_int4_weights_compile_and_run_on_the_emulator_strict(static_graphs, tmp_path: Path) -> None:
    """INT4 per-channel weight QDQ (ORT QInt4) on the decode graph: QNN places every node on HTP and runs it with CPU fallback off."""
    import onnx

    from edgecompile.backends.qnn.graph import prepare
    from edgecompile.backends.qnn.quant import HtpQuantSettings, calibrate_prepared, qdq_types, quantize_for_htp
    from edgecompile.backends.qnn.session import htp_session, provider_options
    from edgecompile.backends.qnn.static_decoder import DECODE, StaticDecoderRunner

    layout, paths = static_graphs
    rotary = np.load(paths["rotary"])
    runner = StaticDecoderRunner(layout, rotary["cos"], rotary["sin"], lambda kind, feeds: {})
    rng = np.random.default_rng(0)
    feeds = [runner.static_feeds(DECODE, (rng.standard_normal((1, 1, layout.hidden)) * 0.5).astype(np.float32), np.array([20]), {n: rng.standard_normal((1, layout.kv_heads, 20, layout.head_dim)).astype(np.float32) for n in layout.past_names()}, 20) for _ in range(4)]
    prepared, _ = prepare(onnx.load(str(paths[DECODE])), layout.input_shapes(DECODE), -100.0, decoder=True)
    settings = HtpQuantSettings(weight_type="int4")
    qdq = quantize_for_htp(prepared, calibrate_prepared(prepared, iter(feeds), settings), settings)
    assert qdq_types(qdq)["weights"] == ["INT4"]
    options = provider_options(57, 75)
    onnx.save(qdq, str(tmp_path / "decode.int4.qdq.onnx"))
    htp_session(tmp_path / "decode.int4.qdq.onnx", options, strict=True, context_out=tmp_path / "decode.int4.ctx.onnx")
    session = htp_session(tmp_path / "decode.int4.ctx.onnx", options, strict=True)
    logits = session.run(["logits"], feeds[0])[0]
    want = _session(paths[DECODE])(feeds[0])["logits"]
    assert logits.shape == want.shape and np.isfinite(logits).all()
    cos = float((logits * want).sum() / (np.linalg.norm(logits) * np.linalg.norm(want)))
    assert cos > 0.9, cos


def test_runner_refuses_a_context_overflow(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    from edgecompile.backends.qnn.static_decoder import StaticDecoderRunner, layout_for
    from edgecompile.errors import InputError

    _, _, loaded = tiny
    layout = layout_for(loaded.config.get_text_config(decoder=True), CONTEXT, CHUNK, -100.0)
    runner = StaticDecoderRunner(layout, np.zeros((CONTEXT, layout.head_dim), np.float32), np.zeros((CONTEXT, layout.head_dim), np.float32), lambda kind, feeds: {})
    past = {n: np.zeros((1, layout.kv_heads, CONTEXT, layout.head_dim), np.float32) for n in layout.past_names()}
    with pytest.raises(InputError, match="static context of 48 tokens"):
        runner({"inputs_embeds": np.zeros((1, 1, layout.hidden), np.float32), "position_ids": np.array([[CONTEXT]]), **past})


RECIPE = f"""precision_preset: vlm-default
quantization: {{activation_type: uint16}}
calibration: {{method: minmax, set: synthetic, samples: 4}}
eval: {{set: synthetic, samples: 3, latency_runs: 3, warmup_runs: 1}}
gates:
  - {{name: token agreement, metric: generation.token_agreement, min: 0.6}}
budget_gates: true
backend_options: {{allow_cpu_fallback: false, context_length: {CONTEXT}, prefill_chunk: 32, decoder_calibration_steps: 4}}
"""


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """(exit code, CLI output, build dir) of ``edgecompile build`` of the tiny LLaVA for snapdragon-8-gen-3."""
    from click.testing import CliRunner

    from edgecompile.cli.main import main

    root = tmp_path_factory.mktemp("snap")
    recipe = write_recipe(root, "snapdragon-8-gen-3", RECIPE, "snap-llava-tiny")
    out = root / "build"
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", str(tiny[0]), "--out", str(out)])
    return result.exit_code, result.output, out


def test_tiny_llava_builds_and_runs_on_the_htp_emulator(built) -> None:  # noqa: ANN001
    code, output, out = built
    assert code == 6, output  # PENDING: the time and memory budgets are the emulator's, completed on the device
    report = json.loads((out / "report.json").read_text())
    assert report["where"]["context"] == "emulator" and report["where"]["executed"]
    metrics = report["metrics"]
    assert metrics["generation.token_agreement"] >= 0.6, metrics["generation.token_agreement"]
    assert metrics["drift.decoder.first_token_logits.cosine_mean"] >= 0.9
    artifact = json.loads((out / "build" / "artifact.json").read_text())
    assert artifact["components"] == {"embed_tokens": "embed_tokens.table.npy", "decoder": "decoder.htp", "vision_encoder": "vision_encoder.htp_ctx.onnx"}
    for graph in ("decoder_prefill", "decoder_decode", "vision_encoder"):
        summary = artifact["extra"]["components"][graph]
        assert summary["placement"]["fallback"] == [], (graph, summary["placement"])  # every node on HTP; sessions are strict
        assert summary["qdq_types"]["activations"] == ["UINT16"]
    assert "SimplifiedLayerNormalization" in artifact["extra"]["components"]["decoder_decode"]["placement"]["on_qnn"]
    graphs = artifact["extra"]["generative"]["layout"]["graphs"]
    assert graphs["prefill"]["inputs"]["attention_bias"] == [1, 1, 32, CONTEXT] and graphs["decode"]["inputs"]["past_key_0"] == [1, 2, CONTEXT - 1, 16]
    assert graphs["decode"]["outputs"]["new_key_0"] == [1, 2, 1, 16]
    assert (out / "build" / "decoder.htp" / "prefill.htp_ctx.onnx").is_file() and (out / "build" / "decoder.htp" / "decode.htp_ctx.onnx").is_file()


def test_unsupported_generative_models_are_refused_before_export() -> None:
    from edgecompile.backends.registry import get_backend
    from edgecompile.errors import InputError
    qnn = get_backend("qnn")
    resolved = SimpleNamespace(recipe_path="recipes/x.yaml", target=SimpleNamespace(name="snapdragon-8-gen-3"), recipe=SimpleNamespace(quantization=SimpleNamespace(weight_transforms=[])))
    qnn.preflight(SimpleNamespace(family="generative", model_types=("llava",), position_layout="1d"), resolved)  # LLaVA builds
    for adapter in (SimpleNamespace(family="generative", model_types=("qwen2_vl",), position_layout="mrope"), SimpleNamespace(family="generative", model_types=("llava_next",), position_layout="1d")):
        with pytest.raises(InputError, match="not supported on HTP yet"):
            qnn.preflight(adapter, resolved)
    # a recipe naming weight transforms is refused at binding: tests/backends/test_generative_backends.py


def test_a_text_model_without_a_static_wrapper_is_refused() -> None:
    from edgecompile.backends.qnn.static_decoder import layout_for, text_config_check
    from edgecompile.errors import InputError

    config = SimpleNamespace(get_text_config=lambda decoder=True: SimpleNamespace(model_type="gemma"))
    with pytest.raises(InputError, match="'gemma' has no static-shape HTP decoder"):
        text_config_check(config, "model/config.json")
    text = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_size=64, num_hidden_layers=2, vocab_size=32, max_position_embeddings=64)
    with pytest.raises(InputError, match="exceeds the model's max_position_embeddings 64"):
        layout_for(text, 128, 16, -100.0)
    with pytest.raises(InputError, match="prefill_chunk"):
        layout_for(text, 64, 64, -100.0)
