"""QUOTA token pruning on the static HTP decoder: prefill segments with host-side prune steps.

The float segment chain (torch-exported static graphs run on the CPU EP) is checked against the
ORT CPU pruned decoder (tests/backends/test_token_pruning.py's model and schedule): the same kept
sets, keys, values and logits, caches of the schedule's lengths, decode steps that continue from
the unpruned length; keep 1.0 reproduces the unpruned static decoder; a prompt too long for a
segment's static length is refused. The tiny LLaVA then builds for snapdragon-8-gen-3 with pruning
after layer 0 and runs on the HTP emulator with CPU fallback off.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from edgecompile.backends.ort_cpu.token_pruning import VISUAL_MASK
from edgecompile.pruning.allocation import KeepSchedule
from edgecompile.runtime.onnx_cpu import cpu_session
from tests.backends.conftest import write_recipe
from tests.backends.test_token_pruning import _prompt  # the same 4-layer shapes and visual run

LAYERS, HIDDEN, HEAD_DIM, KV_HEADS, CONTEXT, CHUNK = 4, 64, 16, 2, 96, 64
SCHEDULE = {0: 0.5, 2: 0.25}
N_REF = 32  # the reference image-token count the segment lengths are fixed for


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(torch model, fused ORT CPU decoder) of a 4-layer Llama with sharp attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder
    from edgecompile.models.decoder_export import export_causal_lm_decoder

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=KV_HEADS,
                         vocab_size=96, max_position_embeddings=256, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    out = tmp_path_factory.mktemp("llama4")
    export_causal_lm_decoder(model, out / "decoder.onnx")
    fused, _ = fuse_decoder(onnx.load(str(out / "decoder.onnx")))
    return model, fused


def _chain(model: torch.nn.Module, schedule: dict[int, float], out: Path):  # noqa: ANN202
    """(layout, runner) of the float static segment graphs for ``schedule``."""
    from edgecompile.backends.qnn.static_decoder import StaticDecoderRunner, export_static_decoder, layout_for

    keep = KeepSchedule(tuple(schedule), tuple(schedule.values()), N_REF)
    layout = layout_for(model.config, CONTEXT, CHUNK, -100.0).with_pruning(keep, 4)
    adapter = SimpleNamespace(language_model=lambda m: m.model, lm_head=lambda m: m.lm_head)
    out.mkdir(parents=True, exist_ok=True)
    paths = export_static_decoder(adapter, model, layout, out, 18)
    sessions = {k: cpu_session(paths[k].read_bytes()) for k in layout.kinds()}

    def run(kind: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in sessions[kind].get_outputs()]
        return dict(zip(names, sessions[kind].run(names, feeds), strict=True))

    rotary = np.load(paths["rotary"])
    return layout, StaticDecoderRunner(layout, rotary["cos"], rotary["sin"], run)


@pytest.fixture(scope="module")
def chain(llama, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    return _chain(llama[0], SCHEDULE, tmp_path_factory.mktemp("segments"))


def _ort_pruned(fused: onnx.ModelProto, schedule: dict[int, float]):  # noqa: ANN202
    """A runner of the ORT CPU pruned decoder that also returns each prune step's kept indices."""
    from edgecompile.backends.ort_cpu.token_pruning import insert_token_pruning

    pruned, report = insert_token_pruning(fused, schedule)
    pruned.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None) for n in report.kept_index.values())
    session = cpu_session(pruned.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()} | {i.name for i in session.get_overridable_initializers()}
    return report, lambda feeds: dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True))


@pytest.mark.parametrize("seed", [0, 1])
def test_segment_chain_equals_the_ort_cpu_pruned_decoder(llama, chain, seed: int) -> None:  # noqa: ANN001
    """Same kept sets, caches of the schedule's lengths, the same keys/values/logits; decode continues."""
    layout, runner = chain
    report, ort_run = _ort_pruned(llama[1], SCHEDULE)
    feeds = _prompt(seed)
    want, got = ort_run(feeds), runner(feeds)
    alive = np.arange(48)
    for step, layer in enumerate(sorted(SCHEDULE)):  # ORT's indices are into the sequence the layer saw; the runner's into the prompt
        alive = alive[want[report.kept_index[layer]]]
        np.testing.assert_array_equal(runner.last_kept[step], alive)
    k0, k2 = KeepSchedule(tuple(SCHEDULE), tuple(SCHEDULE.values()), N_REF).budgets()
    n_text = 48 - N_REF
    expected = [48, n_text + k0, n_text + k0, n_text + k2]
    assert [got[f"present_key_{i}"].shape[2] for i in range(LAYERS)] == expected
    assert [layout.tokens(k) for k in layout.kinds()] == [CHUNK, CHUNK - (N_REF - k0), CHUNK - (N_REF - k2), 1]
    for name in ("logits", *(f"present_{kv}_{i}" for i in range(LAYERS) for kv in ("key", "value"))):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], atol=2e-4, err_msg=name)
    rng = np.random.default_rng(seed + 10)
    for step in range(3):  # decode: positions continue from the unpruned prompt length on both
        common = {"inputs_embeds": rng.standard_normal((1, 1, HIDDEN)).astype(np.float32), "attention_mask": np.ones((1, 49 + step), np.int64),
                  "position_ids": np.array([[48 + step]], np.int64), VISUAL_MASK: np.zeros((1, 1), np.int64)}
        want = ort_run({**common, **{n.replace("present_", "past_"): v for n, v in want.items() if n.startswith("present_")}})
        got = runner({**common, **{n.replace("present_", "past_"): v for n, v in got.items() if n.startswith("present_")}})
        assert [got[f"present_key_{i}"].shape[2] for i in range(LAYERS)] == [e + step + 1 for e in expected]
        np.testing.assert_allclose(got["logits"], want["logits"], atol=2e-4)


def test_keep_one_reproduces_the_unpruned_static_decoder(llama, tmp_path: Path) -> None:  # noqa: ANN001
    from edgecompile.backends.qnn.static_decoder import StaticDecoderRunner, export_static_decoder, layout_for

    model = llama[0]
    _, pruned = _chain(model, {0: 1.0, 2: 1.0}, tmp_path / "keep1")
    layout = layout_for(model.config, CONTEXT, CHUNK, -100.0)
    (tmp_path / "plain").mkdir()
    paths = export_static_decoder(SimpleNamespace(language_model=lambda m: m.model, lm_head=lambda m: m.lm_head), model, layout, tmp_path / "plain", 18)
    sessions = {k: cpu_session(paths[k].read_bytes()) for k in layout.kinds()}
    rotary = np.load(paths["rotary"])
    plain = StaticDecoderRunner(layout, rotary["cos"], rotary["sin"], lambda kind, feeds: dict(zip([o.name for o in sessions[kind].get_outputs()], sessions[kind].run(None, feeds), strict=True)))
    feeds = _prompt(3)
    got, want = pruned(feeds), plain({k: v for k, v in feeds.items() if k != VISUAL_MASK})
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)


def test_a_prompt_too_long_for_a_segment_is_refused(chain) -> None:  # noqa: ANN001
    """Few image tokens in a full chunk: fewer drops than the segments were built for, named in the error."""
    from edgecompile.errors import InputError

    _, runner = chain
    with pytest.raises(InputError, match=r"static length is 48 \(built for 32 image tokens in a 64-token chunk\); this prompt has 8 image tokens"):
        runner(_prompt(0, length=64, visual=(4, 12)))


def test_the_layout_refuses_an_image_longer_than_the_chunk(llama) -> None:  # noqa: ANN001
    from edgecompile.backends.qnn.static_decoder import layout_for
    from edgecompile.errors import InputError

    with pytest.raises(InputError, match="prefill_chunk: 16 tokens cannot hold the prompt's 32 image tokens"):
        layout_for(llama[0].config, CONTEXT, 16, -100.0).with_pruning(KeepSchedule((0,), (0.5,), N_REF), 4)


# --- the build on the HTP emulator ---------------------------------------------------------------

RECIPE = """precision_preset: vlm-default
quantization: {activation_type: uint16}
calibration: {method: minmax, set: synthetic, samples: 4}
eval: {set: synthetic, samples: 3, latency_runs: 3, warmup_runs: 1}
gates:
  - {name: token agreement, metric: generation.token_agreement, min: 0.4}
budget_gates: true
backend_options: {allow_cpu_fallback: false, context_length: 48, prefill_chunk: 32, decoder_calibration_steps: 2}
token_pruning: {candidate_layers: [0], keep_ratios: [0.5]}
"""


@pytest.mark.qnn
def test_tiny_llava_pruned_builds_and_runs_on_the_htp_emulator(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install 'edgecompile[qnn]'); the qnn backend cannot build or run")
    from click.testing import CliRunner

    from edgecompile.cli.main import main
    from tests.tiny_llava import save_tiny_llava

    root = tmp_path_factory.mktemp("snap-pruned")
    model = save_tiny_llava(root / "model")
    recipe = write_recipe(root, "snapdragon-8-gen-3", RECIPE, "snap-llava-pruned")
    out = root / "build"
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", str(model), "--out", str(out)])
    assert result.exit_code == 6, result.output  # PENDING: the time and memory budgets are completed on the device
    artifact = json.loads((out / "build" / "artifact.json").read_text())
    generative = artifact["extra"]["generative"]
    assert generative["layout"]["prune_layers"] == [0] and generative["layout"]["image_tokens"] == 16
    assert set(generative["files"]["graphs"]) == {"prefill", "prefill_1", "decode"}
    graphs = generative["layout"]["graphs"]
    assert graphs["prefill"]["outputs"]["attention_probs"] == [1, 4, 32, 32] and graphs["prefill_1"]["inputs"]["hidden_states"] == [1, 24, 64]
    for graph in ("decoder_prefill", "decoder_prefill_1", "decoder_decode"):
        summary = artifact["extra"]["components"][graph]
        assert summary["placement"]["fallback"] == [], (graph, summary["placement"])
        assert (out / "build" / "decoder.htp" / generative["files"]["graphs"][graph.removeprefix("decoder_")]).is_file()
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    assert metrics["token_pruning.kept_visual_fraction"] == 0.5
    assert metrics["token_pruning.kv_cache_ratio"] < 1.0 and metrics["token_pruning.flops_ratio"] < 1.0
    assert not any("prefill_ms" in k or "prefill_latency" in k for k in metrics)  # the emulator's times are not the device's
    # pruned + uint16 on HTP vs the unpruned float reference (measured here: cosine 0.994, agreement 0.53)
    assert metrics["drift.decoder.first_token_logits.cosine_mean"] >= 0.95, metrics["drift.decoder.first_token_logits.cosine_mean"]
    assert metrics["generation.token_agreement"] >= 0.4, metrics["generation.token_agreement"]
