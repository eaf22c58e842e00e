"""SmoothQuant and AWQ on a real ONNX block: the float function is kept, the searches never lose to
the fixed α, the scales match mit-han-lab's reference formula, AWQ protects a salient channel, and
the static W4A8 artifact is a different, runnable graph from w4a8-dyn."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgecompile.calibration.ranges import TensorRanges
from edgecompile.transforms.awq import awq_scales, group_error
from edgecompile.transforms.awq import search_alpha as awq_search
from edgecompile.transforms.registry import get_transform
from edgecompile.transforms.scaling import Group, fake_quant_int4_weight
from edgecompile.transforms.smoothquant import FIXED_ALPHA, smoothing_scales, w8a8_error
from tests.transforms.scaling_graph import block_graph, cosine, entries, run, samples


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@pytest.mark.parametrize(("name", "precision", "activations"), [("smoothquant", "int8", None), ("smoothquant-fixed", "int8", None), ("awq-fixed", "int4", "static")])
def test_scaling_preserves_the_float_function(name: str, precision: str, activations: str | None) -> None:
    model, _ = block_graph()
    feeds = samples()
    before = run(model, feeds)
    outcome = get_transform(name).apply(_copy(model), "c", entries(precision, activations), lambda: iter(samples()))
    after = run(outcome.model, feeds)
    assert outcome.layers, "the transform changed nothing"
    changed = [l for l in outcome.layers if l["folded_into"] != "unchanged"]
    assert changed
    for out in before:
        assert cosine(before[out], after[out]) >= 0.9999, out
    weights_before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights_after = {i.name: numpy_helper.to_array(i) for i in outcome.model.graph.initializer}
    assert not np.allclose(weights_before["w_q"], weights_after["w_q"])  # it did rescale
    if precision == "int4":  # fc2's input comes from a GELU: the scale is an inserted Mul (AWQ's ScaledActivation)
        assert any(l["folded_into"].startswith("mul:") for l in outcome.layers)


def test_searched_alpha_is_never_worse_than_fixed_on_the_layer_objective() -> None:
    model, _ = block_graph()
    for name, key in (("smoothquant", "objective_w8a8_rel_error"), ("awq", "objective_w4_rel_error")):
        precision = "int8" if name == "smoothquant" else "int4"
        outcome = get_transform(name).apply(_copy(model), "c", entries(precision, "static"), lambda: iter(samples()))
        assert outcome.layers
        for layer in outcome.layers:
            assert layer[key] <= layer["objective_at_fixed_alpha"] + 1e-12, (name, layer)
        # the outliers make smoothing worth it somewhere: strictly better than the fixed α on some group
        assert any(l[key] < 0.999 * l["objective_at_fixed_alpha"] for l in outcome.layers), name


def _reference_smooth_ln_fcs(ln: torch.nn.LayerNorm, fcs: list[torch.nn.Linear], act_scales: torch.Tensor, alpha: float) -> None:
    """mit-han-lab/smoothquant smoothquant/smooth.py ``smooth_ln_fcs``, as published."""
    weight_scales = torch.cat([fc.weight.abs().max(dim=0, keepdim=True)[0] for fc in fcs], dim=0)
    weight_scales = weight_scales.max(dim=0)[0].clamp(min=1e-5)
    scales = (act_scales.pow(alpha) / weight_scales.pow(1 - alpha)).clamp(min=1e-5)
    ln.weight.div_(scales)
    ln.bias.div_(scales)
    for fc in fcs:
        fc.weight.mul_(scales.view(1, -1))


@torch.no_grad()
def test_smoothing_matches_the_reference_smooth_ln_fcs() -> None:
    model, w = block_graph()
    feeds = samples()
    # the reference's act_scales: per-channel max |X| of the LayerNorm output over the calibration set
    x = np.concatenate([f["x"].reshape(-1, w["ln_gamma"].size) for f in feeds])
    ln = torch.nn.LayerNorm(x.shape[1], eps=1e-5)
    ln.weight.copy_(torch.from_numpy(w["ln_gamma"]))
    ln.bias.copy_(torch.from_numpy(w["ln_beta"]))
    act_scales = ln(torch.from_numpy(x)).abs().max(dim=0)[0]
    fcs = []
    for name in ("w_q", "w_k", "w_v"):
        fc = torch.nn.Linear(x.shape[1], w[name].shape[1], bias=False)
        fc.weight.copy_(torch.from_numpy(w[name].T))  # torch stores [out, in]; the ONNX MatMul weight is [in, out]
        fcs.append(fc)
    _reference_smooth_ln_fcs(ln, fcs, act_scales, FIXED_ALPHA)

    outcome = get_transform("smoothquant-fixed").apply(_copy(model), "c", entries("int8"), lambda: iter(feeds))
    ours = {i.name: numpy_helper.to_array(i) for i in outcome.model.graph.initializer}
    np.testing.assert_allclose(ours["ln_gamma"], ln.weight.numpy(), rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(ours["ln_beta"], ln.bias.numpy(), rtol=2e-4, atol=1e-7)
    for name, fc in zip(("w_q", "w_k", "w_v"), fcs, strict=True):
        np.testing.assert_allclose(ours[name], fc.weight.numpy().T, rtol=2e-4, atol=1e-7)
    # and the scales themselves, from the same statistics
    s = smoothing_scales(act_scales.numpy(), [w["w_q"], w["w_k"], w["w_v"]], FIXED_ALPHA)
    np.testing.assert_allclose(w["ln_gamma"] / s, ln.weight.numpy(), rtol=1e-5)


def test_awq_scales_protect_a_salient_channel() -> None:
    rng = np.random.default_rng(3)
    k, n, salient = 64, 48, 9
    x = rng.normal(0, 1, (512, k)).astype(np.float32)
    x[:, salient] *= 40.0  # one channel carries most of the output
    weight = rng.normal(0, 0.05, (k, n)).astype(np.float32)
    entry = entries("int4", "dynamic")[0]
    group = Group("x", ["q_proj"], ["w_q"], [entry])
    absmean = np.abs(x).mean(0)
    alpha, errors = awq_search(x, absmean, [weight], group)
    s = awq_scales(absmean, alpha)
    assert alpha > 0.0 and int(np.argmax(s)) == salient  # the salient channel gets the largest scale
    # its weights are quantized more finely: per-row error of Q(s·W)/s vs W, salient row vs no scaling
    plain = fake_quant_int4_weight(weight, 32)
    scaled = fake_quant_int4_weight(weight * s[:, None], 32) / s[:, None]
    row_err = lambda q: float(np.abs(q[salient] - weight[salient]).mean())  # noqa: E731
    assert row_err(scaled) < 0.95 * row_err(plain)
    others = lambda q: float(np.abs(np.delete(q - weight, salient, 0)).mean())  # noqa: E731
    assert row_err(scaled) / others(scaled) < row_err(plain) / others(plain)  # protected relative to the rest
    # and the group's output error drops against no scaling (α = 0) and the fixed α never beats the search
    assert errors[f"{alpha:.2f}"] < errors["0.00"]
    assert errors[f"{alpha:.2f}"] <= group_error(x, [weight], awq_scales(absmean, 0.5), group)


def test_smoothquant_scales_migrate_difficulty_from_outlier_channels() -> None:
    model, w = block_graph()
    x = np.concatenate([f["x"].reshape(-1, 64) for f in samples()])
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    ln = (x - mu) / np.sqrt(var + 1e-5) * w["ln_gamma"] + w["ln_beta"]
    weights = [w["w_q"], w["w_k"], w["w_v"]]
    s = smoothing_scales(np.abs(ln).max(0), weights, 0.5)
    assert set(np.argsort(s)[-3:]) == {3, 17, 40}  # the outlier channels are divided most
    assert w8a8_error(ln, weights, s) < w8a8_error(ln, weights, np.ones_like(s))


def test_w4a8_static_artifact_differs_from_w4a8_dyn_and_runs() -> None:
    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.transforms.scaling import collect_stats

    model, _ = block_graph()
    feeds = samples()
    reference = run(model, feeds)
    stats = collect_stats(model, ["ln", "ln2", "h"], lambda: iter(feeds))
    x_ranges = {}
    for t in ("ln", "ln2", "h"):
        rows = stats[t].rows
        x_ranges[t] = (float(rows.min()), float(rows.max()))
    ranges = TensorRanges("minmax", x_ranges, len(feeds))
    static = insert_matmul_nbits(_copy(model), entries("int4", "static"), None, ranges)
    dynamic = insert_matmul_nbits(_copy(model), entries("int4", "dynamic"))
    per_channel = insert_matmul_nbits(_copy(model), entries("int4", "static", granularity="per_channel"), None, ranges)
    ops = lambda m: sorted(n.op_type for n in m.graph.node)  # noqa: E731
    assert "MatMulNBits" in ops(dynamic) and "QuantizeLinear" not in ops(dynamic)
    assert "MatMulNBits" not in ops(static) and ops(static).count("QuantizeLinear") == 3  # one per activation tensor
    int4 = [i for i in static.graph.initializer if i.data_type == onnx.TensorProto.INT4]
    assert len(int4) == 5  # every planned weight is stored as INT4
    assert static.SerializeToString() != dynamic.SerializeToString()
    blocks = {a.i for n in static.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute if a.name == "block_size"}
    assert blocks == {32}
    outs = {"static": run(static, feeds), "dynamic": run(dynamic, feeds), "per_channel": run(per_channel, feeds)}
    for kind, out in outs.items():
        for name in reference:
            assert cosine(out[name], reference[name]) > 0.98, (kind, name)
    assert not np.allclose(outs["static"]["y"], outs["dynamic"]["y"])
    with pytest.raises(Exception, match="no calibrated range"):
        insert_matmul_nbits(_copy(model), entries("int4", "static"), None, TensorRanges("minmax", {}, 0))


@pytest.mark.parametrize("bits", [3, 2])
def test_lowbit_probe_weights_survive_the_int4_build_exactly(bits: int) -> None:
    """The probe's INT3/INT2 grid is a subset of the symmetric INT4 grid: the INT4 build stores it exactly."""
    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits

    model, _ = block_graph()
    feeds = samples(2)
    outcome = get_transform(f"int{bits}-probe").apply(_copy(model), "c", entries("int4", "static", granularity="per_channel"), None)
    probed = {i.name: numpy_helper.to_array(i) for i in outcome.model.graph.initializer}
    assert all(len(np.unique(np.round(probed[w][:, 0] / np.abs(probed[w][:, 0]).max() * 2 ** (bits - 1)))) <= 2**bits for w in ("w_q", "w_fc2"))
    x_ranges = {t: (-50.0, 50.0) for t in ("ln", "ln2", "h")}
    built = insert_matmul_nbits(_copy(outcome.model), entries("int4", "static", granularity="per_channel"), None, TensorRanges("minmax", x_ranges, 1))
    # exactness: every INT4 DequantizeLinear output equals the probe's weight (the per-channel QDQ path may store it transposed)
    dq = [n for n in built.graph.node if n.op_type == "DequantizeLinear" and "_DQ_Q4" in n.input[0]]
    assert len(dq) == 5
    probe_model = _copy(built)
    for n in dq:
        probe_model.graph.output.append(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None))
    got = run(probe_model, feeds[:1])
    for n in dq:
        weight = probed[n.input[0].split("_DQ_Q4")[0]]
        value = got[n.output[0]]
        assert min(np.abs(value - w).max() for w in (weight, weight.T) if w.shape == value.shape) < 1e-6, n.name
