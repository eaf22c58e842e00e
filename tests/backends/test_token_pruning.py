"""QUOTA token pruning in the fused ORT CPU decoder: the kept set, the per-layer caches, exactness at keep 1.0.

A 4-layer Llama decoder exported by torch and fused into GroupQueryAttention (fp32, Q/K/V separate)
is pruned after layers 0 and 2; prompts carry a run of "visual" tokens in the middle, the way a
LLaVA prompt does. The kept set is checked against ``pruning.score`` in numpy on the very tensors
the graph scored (exposed as outputs), the caches against ``KeepSchedule.budgets``. The whole
generation loop on an INT4 build (packed QKV) is tests/stages/test_token_pruning_build.py's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder
from edgecompile.backends.ort_cpu.token_pruning import VISUAL_MASK, insert_token_pruning
from edgecompile.pruning.allocation import KeepSchedule
from edgecompile.pruning.score import composite_scores, kept_positions, select_tokens
from edgecompile.runtime.onnx_cpu import cpu_session

LAYERS, HIDDEN, HEAD_DIM, KV_HEADS = 4, 64, 16, 2
SCHEDULE = {0: 0.5, 2: 0.25}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, onnx.ModelProto]:
    """The torch model and its fused decoder graph."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgecompile.models.decoder_export import export_causal_lm_decoder

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=KV_HEADS,
                         vocab_size=96, max_position_embeddings=256, tie_word_embeddings=False)
    out = tmp_path_factory.mktemp("llama4")
    torch_model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper attention than the default init's: rotary phases then move the logits (by ~1e-2)
        for layer in torch_model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    export_causal_lm_decoder(torch_model, out / "decoder.onnx")
    model, report = fuse_decoder(onnx.load(str(out / "decoder.onnx")))
    assert report.attentions == LAYERS
    return torch_model, model


@pytest.fixture(scope="module")
def fused(built: tuple[torch.nn.Module, onnx.ModelProto]) -> onnx.ModelProto:
    return built[1]


def _prompt(seed: int, length: int = 48, visual: tuple[int, int] = (4, 36)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((1, length), np.int64)
    mask[0, visual[0] : visual[1]] = 1
    return {
        "inputs_embeds": rng.standard_normal((1, length, HIDDEN)).astype(np.float32),
        "attention_mask": np.ones((1, length), np.int64),
        "position_ids": np.arange(length, dtype=np.int64)[None],
        VISUAL_MASK: mask,
        **{f"past_{kv}_{i}": np.zeros((1, KV_HEADS, 0, HEAD_DIM), np.float32) for i in range(LAYERS) for kv in ("key", "value")},
    }


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kind = {True: onnx.TensorProto.INT64, False: onnx.TensorProto.FLOAT}
    out.graph.output.extend(onnx.helper.make_tensor_value_info(n, kind[n.endswith("kept_index")], None) for n in names)
    return out


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = cpu_session(model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in (*session.get_inputs(), *session.get_overridable_initializers())}
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted}), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kept_set_is_the_numpy_top_k_of_the_composite_score(fused: onnx.ModelProto, seed: int) -> None:
    pruned, report = insert_token_pruning(fused, SCHEDULE)
    probe = [t for layer in SCHEDULE for t in (report.attention_probs[layer], report.hidden[layer], report.kept_index[layer])]
    feeds = _prompt(seed)
    out = _run(_with_outputs(pruned, probe), feeds)
    visual = feeds[VISUAL_MASK][0].astype(bool)
    n_ref = int(visual.sum())
    budgets = KeepSchedule(tuple(SCHEDULE), tuple(SCHEDULE.values()), n_ref).budgets()
    for (layer, _), k in zip(SCHEDULE.items(), budgets, strict=True):
        probs, hidden, kept = (out[t] for t in (report.attention_probs[layer], report.hidden[layer], report.kept_index[layer]))
        assert probs.shape[1] == hidden.shape[1] == visual.size  # the sequence this layer saw
        scores = composite_scores(probs, hidden[0], visual)  # probs: the head mean the graph scored, [1 "head", S, T]
        expected = kept_positions(visual, select_tokens(scores, k))
        np.testing.assert_array_equal(kept, expected)
        assert int(visual[kept].sum()) == k and (~visual[kept]).sum() == (~visual).sum()  # every text token survives
        visual = visual[kept]


def test_recomputed_attention_equals_group_query_attention_probabilities(fused: onnx.ModelProto) -> None:
    """The scores read probabilities recomputed beside GroupQueryAttention; their head mean equals its own (qk_output=2)'s."""
    pruned, report = insert_token_pruning(fused, {0: 1.0})
    asked = _with_outputs(fused, ["qk0"])
    gqa = next(n for n in asked.graph.node if n.op_type == "GroupQueryAttention" and n.output[1] == "present_key_0")
    gqa.output.append("qk0")
    gqa.attribute.append(onnx.helper.make_attribute("qk_output", 2))
    feeds = _prompt(3)
    ours = _run(_with_outputs(pruned, [report.attention_probs[0]]), feeds)[report.attention_probs[0]]  # [1, S, T]: the head mean
    theirs = _run(asked, feeds)["qk0"]  # [1, heads, S, T]
    assert ours.shape == (1, *theirs.shape[2:])
    np.testing.assert_allclose(ours, theirs.mean(axis=1), atol=1e-6)


def test_each_layer_cache_holds_its_schedule_and_decode_continues(fused: onnx.ModelProto) -> None:
    pruned, _ = insert_token_pruning(fused, SCHEDULE)
    feeds = _prompt(4)
    visual = feeds[VISUAL_MASK][0]
    n_text, n_ref = int((visual == 0).sum()), int(visual.sum())
    k0, k2 = KeepSchedule(tuple(SCHEDULE), tuple(SCHEDULE.values()), n_ref).budgets()
    expected = [visual.size, n_text + k0, n_text + k0, n_text + k2]  # layer l+1 onward hold what survived layer l
    session = cpu_session(pruned.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, feeds), strict=True))
    assert [out[f"present_key_{i}"].shape[2] for i in range(LAYERS)] == expected
    assert [out[f"present_value_{i}"].shape[2] for i in range(LAYERS)] == expected
    length = visual.size
    for step in range(3):  # decode: one token, zero visual mask, positions continue from the unpruned length
        step_feeds = {
            "inputs_embeds": np.random.default_rng(step).standard_normal((1, 1, HIDDEN)).astype(np.float32),
            "attention_mask": np.ones((1, length + step + 1), np.int64), "position_ids": np.array([[length + step]], np.int64),
            VISUAL_MASK: np.zeros((1, 1), np.int64),
            **{n.replace("present_", "past_"): out[n] for n in names if n.startswith("present_")},
        }
        out = dict(zip(names, session.run(names, step_feeds), strict=True))
        assert [out[f"present_key_{i}"].shape[2] for i in range(LAYERS)] == [e + step + 1 for e in expected]
        assert np.isfinite(out["logits"]).all()


def test_keep_ratio_one_reproduces_the_unpruned_graph_exactly(fused: onnx.ModelProto) -> None:
    pruned, _ = insert_token_pruning(fused, {0: 1.0, 1: 1.0, 2: 1.0})
    session, plain = cpu_session(pruned.SerializeToString()), cpu_session(fused.SerializeToString())
    names = [o.name for o in plain.get_outputs()]
    for seed in (5, 6):
        feeds = _prompt(seed)
        got = session.run(names, feeds)
        want = plain.run(names, {k: v for k, v in feeds.items() if k != VISUAL_MASK})
        for name, a, b in zip(names, got, want, strict=True):
            assert a.shape == b.shape and np.array_equal(a, b), name


@pytest.mark.parametrize("seed", [3, 10])
def test_kept_tokens_rotate_at_their_original_positions(built: tuple[torch.nn.Module, onnx.ModelProto], seed: int) -> None:
    """The pruned graph's logits equal torch's layers run on the same kept sets at the original position ids.

    ONNX Runtime's CPU GroupQueryAttention ignores ``position_ids`` at the prompt; without the explicit
    rotary after a prune step the kept tokens would be rotated at their compacted positions (the
    logits then differ by ~1e-2 on this model).
    """
    model, fused = built
    pruned, report = insert_token_pruning(fused, SCHEDULE)
    feeds = _prompt(seed)
    got = _run(_with_outputs(pruned, [report.kept_index[layer] for layer in SCHEDULE]), feeds)
    language_model = model.model
    hidden, positions = torch.from_numpy(feeds["inputs_embeds"]), torch.from_numpy(feeds["position_ids"])
    with torch.no_grad():
        for i, layer in enumerate(language_model.layers):
            n = hidden.shape[1]
            bias = torch.full((n, n), float("-inf")).triu(1)[None, None]
            out = layer(hidden, attention_mask=bias, position_embeddings=language_model.rotary_emb(hidden, positions))
            hidden = out[0] if isinstance(out, tuple) else out
            if i in SCHEDULE:
                kept = torch.from_numpy(got[report.kept_index[i]])
                hidden, positions = hidden[:, kept], positions[:, kept]
        want = model.lm_head(language_model.norm(hidden)).numpy()
    assert got["logits"].shape == want.shape
    np.testing.assert_allclose(got["logits"], want, atol=1e-3)


def test_same_input_same_kept_set(fused: onnx.ModelProto) -> None:
    pruned, report = insert_token_pruning(fused, SCHEDULE)
    probe = _with_outputs(pruned, [report.kept_index[2]])
    runs = [_run(probe, _prompt(7))[report.kept_index[2]] for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_without_the_mask_the_graph_is_the_unpruned_one(fused: onnx.ModelProto) -> None:
    """The mask is an overridable initializer (zeros): callers that do not feed it run the decoder unpruned."""
    pruned, _ = insert_token_pruning(fused, SCHEDULE)
    session = cpu_session(pruned.SerializeToString())
    assert VISUAL_MASK in {i.name for i in session.get_overridable_initializers()}
    feeds = {k: v for k, v in _prompt(9).items() if k != VISUAL_MASK}
    names = [o.name for o in session.get_outputs()]
    want = cpu_session(fused.SerializeToString()).run(names, feeds)
    assert all(np.array_equal(a, b) for a, b in zip(session.run(names, feeds), want, strict=True))


def test_text_only_prompt_passes_through(fused: onnx.ModelProto) -> None:
    """No visual token: the If's else-branch; the graph equals the unpruned one on the same prompt."""
    pruned, _ = insert_token_pruning(fused, SCHEDULE)
    feeds = {**_prompt(8), VISUAL_MASK: np.zeros((1, 48), np.int64)}
    got = _run(pruned, feeds)
    want = _run(fused, {k: v for k, v in feeds.items() if k != VISUAL_MASK})
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize(("layers", "message"), [
    ({3: 0.5}, "the last cannot prune"),
    ({0: 0.3, 1: 0.5}, "must not increase"),
    ({0: 0.0}, "not in (0, 1]"),
    ({7: 0.5}, "layer 7"),
])
def test_refusals_name_the_problem(fused: onnx.ModelProto, layers: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        insert_token_pruning(fused, layers)


def test_unfused_decoder_is_refused(fused: onnx.ModelProto, tmp_path: Path) -> None:
    plain = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    with pytest.raises(ValueError, match="no GroupQueryAttention"):
        insert_token_pruning(plain, {0: 0.5})
