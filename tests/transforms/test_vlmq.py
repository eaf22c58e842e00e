"""VLMQ (seed 001): G ≡ 1 is GPTQ exactly, H̃ from ONNX activations is X G² Xᵀ from torch, G per modality, strict settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgecompile.errors import InputError
from tests.tiny_llava import IMAGE_TOKEN_ID, save_tiny_llava

CAL = 3  # calibration samples (synthetic: seeded random images)


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """(adapter, loaded, float decoder graph, plan entries of the decoder, samples()) of a tiny Llava."""
    from edgecompile.models.export import export_component
    from edgecompile.models.llava import LlavaAdapter
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import rules_for
    from edgecompile.data.sources import calibration_samples

    root = tmp_path_factory.mktemp("vlmq")
    path = save_tiny_llava(root / "model")
    adapter = LlavaAdapter()
    loaded = adapter.load(path)
    spec = next(s for s in adapter.components(loaded) if s.name == "decoder")
    export_component(spec, root / "decoder.onnx", 21)
    model = onnx.load(str(root / "decoder.onnx"))
    plan = annotate({"decoder": model}, rules_for("vlm-default", (), 32), "vlm-default", adapter.role_patterns)
    return adapter, loaded, model, list(plan.entries), lambda: calibration_samples("synthetic", CAL)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _side(llava):  # noqa: ANN001, ANN202
    from edgecompile.transforms.vlmq import TorchSide

    adapter, loaded, _, _, samples = llava
    return TorchSide(adapter, loaded, samples)


def test_constant_importance_equals_the_gptq_transform_exactly(llava) -> None:  # noqa: ANN001
    """G ≡ 1: the same codes, scales and float weights as the ``gptq`` transform (both the reference loop with H = X Xᵀ)."""
    from edgecompile.transforms.gptq import TRANSFORM as GPTQ
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ

    adapter, loaded, model, entries, samples = llava
    feeds = lambda: adapter.calibration_feeds(loaded, samples(), "decoder")  # noqa: E731
    gptq = GPTQ.apply(_copy(model), "decoder", entries, feeds)
    vlmq = VLMQ.bind(_side(llava)).with_settings(importance="constant").apply(_copy(model), "decoder", entries, feeds)
    assert len(gptq.prequantized.nodes) == len(vlmq.prequantized.nodes) >= 14  # 2 layers x 7 linears
    theirs = {n.replaces: n for n in gptq.prequantized.nodes}
    for node in vlmq.prequantized.nodes:
        other = theirs[node.replaces]
        assert node.attributes == other.attributes and node.inputs == other.inputs
        for name in node.initializers:  # packed codes, scales
            np.testing.assert_array_equal(vlmq.prequantized.tensors[name], gptq.prequantized.tensors[name])
    ours = {i.name: numpy_helper.to_array(i) for i in vlmq.model.graph.initializer}
    for i in gptq.model.graph.initializer:
        np.testing.assert_array_equal(ours[i.name], numpy_helper.to_array(i))


def test_gradient_importance_changes_only_the_attention_projections(llava) -> None:  # noqa: ANN001
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ

    adapter, loaded, model, entries, samples = llava
    feeds = lambda: adapter.calibration_feeds(loaded, samples(), "decoder")  # noqa: E731
    plain = VLMQ.bind(_side(llava)).with_settings(importance="constant").apply(_copy(model), "decoder", entries, feeds)
    grad = VLMQ.bind(_side(llava)).apply(_copy(model), "decoder", entries, feeds)
    changed = {n.replaces for n in grad.prequantized.nodes if any(not np.array_equal(grad.prequantized.tensors[t], plain.prequantized.tensors[t]) for t in n.initializers)}
    modules = {e.node: e.module for e in entries}
    assert len(changed) >= 4 and all("self_attn" in modules[n] for n in changed)  # MLP linears keep the plain Hessian (Algorithm 1)
    assert {r["importance"] for r in grad.layers} == {"gradient", "plain"}
    assert "vlmq_importance.json" in grad.files


def _reference_gptq(w_out_in: torch.Tensor, h: torch.Tensor, bits: int, group: int, blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """IST-DASLab/gptq ``fasterquant`` (symmetric min/max grid, groups, no act_order), [out, in] layout, float64."""
    maxq = 2**bits - 1
    w = w_out_in.clone().double()
    h = h.clone().double()
    cols = w.shape[1]
    h[range(cols), range(cols)] += percdamp * torch.mean(torch.diag(h))
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q_all = torch.zeros_like(w)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1, err1, h1 = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2]), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:
                g = w[:, i1 + i : i1 + i + group]
                xmax = torch.maximum(g.min(1).values.clamp(max=0).abs(), g.max(1).values.clamp(min=0))
                scale, zero = 2 * xmax / maxq, (maxq + 1) / 2
            x = w1[:, i]
            q = scale * (torch.clamp(torch.round(x / scale) + zero, 0, maxq) - zero)
            q_all[:, i1 + i] = q
            e = (x - q) / h1[i, i]
            w1[:, i:] -= e.unsqueeze(1) @ h1[i, i:].unsqueeze(0)
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q_all


@pytest.mark.parametrize("bits", [4, 2])
def test_our_gptq_loop_is_the_reference_and_onnxruntimes_ignores_the_hessian(bits: int) -> None:
    from onnxruntime.quantization.neural_compressor.weight_only import gptq

    from edgecompile.transforms.vlmq_gptq import gptq_weight

    rng = np.random.default_rng(bits)
    w = rng.standard_normal((256, 24)).astype(np.float32)  # ONNX layout [K, N]; 2 lazy-update blocks of 128
    x = rng.standard_normal((600, 256))
    x[:, 1:] += 0.8 * x[:, :-1]  # correlated inputs: error feedback matters
    h = x.T @ x
    ours = gptq_weight(w, h, bits, 32, True)
    ref = _reference_gptq(torch.from_numpy(w.T.copy()), torch.from_numpy(h), bits, 32).numpy().T
    np.testing.assert_allclose(ours.dequantized, ref, rtol=0, atol=1e-9)
    rtn = gptq_weight(w, np.eye(256), bits, 32, True).dequantized  # identity H: no feedback, round-to-nearest
    layer_error = lambda q: np.linalg.norm(x @ (q - w))  # noqa: E731
    assert layer_error(ours.dequantized) < 0.9 * layer_error(rtn)
    # onnxruntime 1.32's routine returns the same weights for any H (its update reads the zero triangle of U):
    # when this fails, onnxruntime fixed it, and solver: onnxruntime becomes real GPTQ
    np.testing.assert_array_equal(gptq(w.copy(), h.copy(), bits, 32, "sym"), gptq(w.copy(), np.eye(256), bits, 32, "sym"))


def _q_inputs(language_model: torch.nn.Module, embeds: np.ndarray, positions: np.ndarray) -> dict[str, torch.Tensor]:
    """The torch inputs of every layer's q_proj and o_proj (hooks on the HF forward)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(language_model.layers):
        for proj in ("q_proj", "o_proj"):
            hooks.append(getattr(layer.self_attn, proj).register_forward_hook(lambda _m, inp, _o, key=f"{i}.{proj}": seen.__setitem__(key, inp[0][0].double())))
    with torch.no_grad():
        language_model(inputs_embeds=torch.from_numpy(embeds), position_ids=torch.from_numpy(positions), attention_mask=torch.ones(1, embeds.shape[1], dtype=torch.long))
    for h in hooks:
        h.remove()
    return seen


def test_weighted_hessian_from_onnx_equals_x_g2_xt_from_torch(llava) -> None:  # noqa: ANN001
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ
    from edgecompile.transforms.vlmq_hessian import weighted_hessians
    from edgecompile.transforms.vlmq_importance import attention_projection

    adapter, loaded, model, entries, _ = llava
    transform = VLMQ.bind(_side(llava))
    prefills = list(transform._prefills("decoder"))
    per_sample = transform._importance("decoder", 32, True)
    assert len(per_sample) == len(prefills) == CAL
    int4 = {e.node: e for e in entries if e.precision == "int4" and attention_projection(e.module) and attention_projection(e.module)[1] in ("q_proj", "o_proj")}
    nodes = {n.name: n for n in model.graph.node if n.name in int4}
    consumers: dict[str, list[str]] = {}
    for name, node in nodes.items():
        consumers.setdefault(node.input[0], []).append(name)
    key = {name: attention_projection(int4[name].module) for name in nodes}
    hessians = weighted_hessians(model, consumers, lambda: (f for f, _ in prefills), lambda s, n: per_sample[s].g[key[n]], chunk_tensors=1)  # one tensor per run: chunking exercised
    expected: dict[str, np.ndarray] = {}
    for s, (feeds, _) in enumerate(prefills):
        xs = _q_inputs(adapter.language_model(loaded), feeds["inputs_embeds"], feeds["position_ids"])
        for name in nodes:
            layer, proj = key[name]
            x = xs[f"{layer}.{proj}"].numpy()
            g = per_sample[s].g[(layer, proj)]
            expected[name] = expected.get(name, 0) + (2.0 / CAL) * (x.T * g**2) @ x
    assert len(expected) == 4
    for name, h in expected.items():
        assert np.linalg.norm(hessians[name] - h) / np.linalg.norm(h) <= 1e-5, name


def test_importance_covers_image_and_text_tokens_and_handles_layer_zero(llava) -> None:  # noqa: ANN001
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ, importance_summary
    from edgecompile.transforms.vlmq_importance import BlockwiseImportance, _attn

    adapter, loaded, _, _, _ = llava
    transform = VLMQ.bind(_side(llava))
    feeds, mask = next(iter(transform._prefills("decoder")))
    assert 0 < mask.sum() < mask.size  # 16 image tokens among the prompt's
    lm = adapter.language_model(loaded)
    engine = BlockwiseImportance(lm, 4, 32, True, "l1", "inputs")
    sample = engine.sample(feeds["inputs_embeds"], feeds["position_ids"], mask)
    # eq. 5 at layer 0 is identically zero (X̂_0 = X_0): the fallback rounds the block's own weights
    x = torch.from_numpy(feeds["inputs_embeds"])
    positions = torch.from_numpy(feeds["position_ids"])
    from transformers.masking_utils import create_causal_mask

    with torch.no_grad():
        m = create_causal_mask(config=lm.config, inputs_embeds=x, attention_mask=torch.ones(1, x.shape[1], dtype=torch.long), cache=None, position_ids=positions)
        pe = lm.rotary_emb(x, position_ids=positions)
        a = _attn(lm.layers[0], x, m, pe, positions)
        assert float((a - _attn(lm.layers[0], x.clone(), m, pe, positions)).pow(2).sum()) == 0.0
    assert 0 in sample.fallback and sample.loss[0] > 0 and sample.loss[1] > 0
    for (layer, proj), g in sample.g.items():
        assert g.shape == mask.shape and np.all(np.isfinite(g)) and g[mask].mean() > 0 and g[~mask].mean() > 0, (layer, proj)
    both = BlockwiseImportance(lm, 4, 32, True, "l2", "inputs_and_block").sample(feeds["inputs_embeds"], feeds["position_ids"], mask)
    assert not both.fallback and not np.allclose(both.g[(1, "q_proj")], sample.g[(1, "q_proj")])
    summary = importance_summary([sample], transform.settings, IMAGE_TOKEN_ID)
    layer0 = summary["layers"][0]
    assert layer0["image"]["tokens"] == 4 * mask.sum() and layer0["text"]["tokens"] == 4 * (~mask).sum()
    assert layer0["image"]["p50"] <= layer0["image"]["p90"] and summary["ratio_image_text"] > 0
    assert summary["fallbacks"][0]["layer"] == 0


@pytest.mark.parametrize(("bits", "symmetric"), [(2, True), (2, False), (4, True), (4, False)])
def test_matmul_nbits_packing_computes_gptqs_weights_on_onnxruntime(bits: int, symmetric: bool) -> None:
    """bits=2 included: MatMulNBits bits=2 runs on onnxruntime 1.32's CPU kernel and holds GPTQ's grid exactly."""
    from edgecompile.transforms.gptq import dequantized_weight
    from edgecompile.transforms.prequantized import PrequantizedNode
    from edgecompile.transforms.vlmq_gptq import gptq_weight, matmul_nbits

    rng = np.random.default_rng(bits)
    w = rng.standard_normal((96, 20)).astype(np.float32)  # 3 blocks of 32: an odd block count packs its zero points padded
    x = rng.standard_normal((300, 96))
    result = gptq_weight(w, x.T @ x, bits, 32, symmetric)
    assert result.codes.max() <= 2**bits - 1 and len(np.unique(result.dequantized[:32, 0])) <= 2**bits
    new, inits = matmul_nbits(onnx.helper.make_node("MatMul", ["A", "W"], ["Y"], name="mm"), result, bits, 32, symmetric)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in new.attribute}
    assert attrs["bits"] == bits and attrs["block_size"] == 32 and (len(new.input) == 4) != symmetric
    spec = PrequantizedNode("mm", new.op_type, new.domain, new.name, list(new.input), list(new.output), attrs, [t.name for t in inits])
    back = dequantized_weight(spec, {t.name: numpy_helper.to_array(t) for t in inits})
    np.testing.assert_allclose(back, result.dequantized, rtol=0, atol=1e-6 * np.abs(result.dequantized).max())


def test_vlmq_settings_are_strict_and_name_the_field(tmp_path: Path) -> None:
    from recipe_files import write_recipe

    from edgecompile.config.recipe import Vlmq, load_recipe
    from edgecompile.transforms.registry import get_transform, transform_names
    from edgecompile.transforms.vlmq import VlmqSettings

    assert "vlmq" in transform_names() and get_transform("vlmq").needs_activations
    assert set(Vlmq.model_fields) == set(VlmqSettings.__dataclass_fields__)  # recipe and transform agree on the names
    assert Vlmq().model_dump() == VlmqSettings().__dict__  # ... and on the defaults
    ok = load_recipe(write_recipe(tmp_path / "ok", extra="quantization: {int4_algorithm: vlmq, vlmq: {norm: l2, bits: 2, damping: 0.05}}\n"))
    assert ok.recipe.quantization.vlmq.norm == "l2" and ok.recipe.quantization.vlmq_settings.bits == 2
    bad = {
        "quantization: {int4_algorithm: vlmq, vlmq: {norm: l3}}\n": r"vlmq.*norm",
        "quantization: {int4_algorithm: vlmq, vlmq: {bits: 3}}\n": r"vlmq.*bits",
        "quantization: {int4_algorithm: vlmq, vlmq: {damping: 0}}\n": r"vlmq.*damping",
        "quantization: {int4_algorithm: vlmq, vlmq: {samples_count: 4}}\n": r"vlmq.*samples_count",
        "quantization: {int4_algorithm: vlmq, vlmq: {image_weight: 0.1}}\n": r"image_weight.*image_downweight",
        "quantization: {int4_algorithm: gptq, vlmq: {norm: l2}}\n": r"vlmq.*int4_algorithm: vlmq",
    }
    for i, (extra, pattern) in enumerate(bad.items()):
        with pytest.raises(InputError, match=pattern):
            load_recipe(write_recipe(tmp_path / f"bad{i}", extra=extra))


def test_unbound_vlmq_refuses_clearly(llava) -> None:  # noqa: ANN001
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ

    _, _, model, entries, _ = llava
    with pytest.raises(InputError, match="int4_algorithm: vlmq needs the torch model"):
        VLMQ.apply(_copy(model), "decoder", entries, None)


def test_importance_json_is_plotted_in_the_build_report() -> None:
    from edgecompile.reports import plots
    from edgecompile.reports.html import build_page
    from edgecompile.reports.view import build_view

    if plots.available() is not None:
        pytest.skip(plots.available())
    stats = lambda m: {"mean": m, "p50": m * 0.8, "p90": m * 2, "tokens": 10}  # noqa: E731
    doc = {"settings": {"norm": "l1", "perturb": "inputs", "importance": "gradient", "bits": 2}, "samples": 4, "image_tokens_per_sample": 36.0, "text_tokens_per_sample": 10.0, "ratio_image_text": 0.42,
           "layers": [{"layer": 0, "image": stats(0.01), "text": stats(0.03), "ratio": 0.33, "block_loss_mean": 1.0}, {"layer": 1, "image": None, "text": stats(0.05), "ratio": None, "block_loss_mean": None}],
           "fallbacks": [{"layer": 0, "why": "eq. 5 is zero at layer 0"}]}
    view = build_view({"recipe": "r", "metrics": {}, "where": {"description": "this machine", "context_label": ""}}, vlmq=doc)
    png = plots.vlmq_importance_png(doc)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    page = build_page(view, {"token importance": png})
    assert 'id="vlmq"' in page and 'data-plot="token importance"' in page and "eq. 5 is zero at layer 0" in page and "0.42" in page
    assert 'id="vlmq"' not in build_page(build_view({"recipe": "r", "metrics": {}, "where": {"description": "this machine", "context_label": ""}}), {})


def test_int2_codes_replace_the_float_matmuls_and_run_in_the_decoder(llava) -> None:  # noqa: ANN001
    """The prequantized bits=2 nodes a build packs (apply_prequantized) run in the whole decoder on onnxruntime and compute the float graph's rounded weights."""
    import onnxruntime as ort

    from edgecompile.transforms.prequantized import apply_prequantized
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ

    adapter, loaded, model, entries, samples = llava
    outcome = VLMQ.bind(_side(llava)).with_settings(bits=2, importance="constant").apply(_copy(model), "decoder", entries, None)
    assert {n.attributes["bits"] for n in outcome.prequantized.nodes} == {2} and {r["bits"] for r in outcome.layers} == {2}
    packed, replaced = apply_prequantized(_copy(outcome.model), outcome.prequantized)
    assert len(replaced) == len(outcome.prequantized.nodes)
    feeds = next(iter(adapter.calibration_feeds(loaded, samples(), "decoder")))
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]  # noqa: E731
    got, want = run(packed), run(outcome.model)
    cosine = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine > 0.995  # equal weights; MatMulNBits accuracy_level 4 rounds the activations to int8
