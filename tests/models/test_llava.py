"""Llava end to end on a tiny real-architecture checkpoint: export parity, the plan, the artifact, the report."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from tests.llava_build import built_llava


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    model, build_dir, code, output = built_llava(tmp_path_factory.mktemp("llava"))
    assert code == 0, output
    return model, build_dir


def _summary(build_dir, stage):  # noqa: ANN001, ANN202
    return json.loads((build_dir / "manifest.json").read_text())["stages"][stage]["summary"]


def test_export_parity_prefill_and_decode(build) -> None:  # noqa: ANN001
    components = _summary(build[1], "export")["components"]
    assert set(components) == {"vision_encoder", "embed_tokens", "decoder"}
    parity = components["decoder"]["parity"]
    assert parity["decode_steps_checked"] >= 3
    assert parity["prefill_cosine"] > 0.99999 and parity["decode_cosine"] > 0.99999
    assert parity["prefill_max_abs_error"] < 1e-4 and parity["decode_max_abs_error"] < 1e-4
    assert parity["argmax_agreement"] == 1.0
    assert components["vision_encoder"]["parity"]["cosine"] > 0.99999
    decoder = onnx.load(str(build[1] / "export" / "decoder.onnx"), load_external_data=False)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in decoder.graph.input}
    assert isinstance(dims["past_key_0"][2], str) and isinstance(dims["inputs_embeds"][1], str)  # one graph: prefill and decode


def test_plan_mixed_precision(build) -> None:  # noqa: ANN001
    plan = json.loads((build[1] / "annotate" / "plan.json").read_text())["entries"]
    by = Counter((e["component"], e["role"], e["precision"]) for e in plan if e["weight"])
    assert by[("vision_encoder", "patch_embed", "fp16")] == 1
    assert by[("vision_encoder", "projector", "fp16")] == 2
    assert by[("decoder", "lm_head", "int8")] == 1
    assert by[("decoder", "attn_qkv", "int4")] > 0 and by[("decoder", "mlp", "int4")] > 0
    assert by[("vision_encoder", "attn_qkv", "int8")] > 0 and by[("vision_encoder", "mlp", "int8")] > 0
    assert not any(e["precision"] == "int4" for e in plan if e["component"] != "decoder" and e["role"] != "embeddings")
    assert [e["precision"] for e in plan if e["component"] == "embed_tokens" and e["role"] == "embeddings"] == ["int4"]  # the token-embedding table (GatherBlockQuantized)
    assert all(e["precision"] == "float" for e in plan if e["role"] in ("softmax", "layernorm", "residual_add"))
    assert all(e["block_size"] == 16 for e in plan if e["precision"] == "int4")


def test_artifact_int4_decoder_int8_vit(build) -> None:  # noqa: ANN001
    plan = json.loads((build[1] / "build" / "plan.effective.json").read_text())["entries"]
    int4 = sum(1 for e in plan if e["component"] == "decoder" and e["precision"] == "int4")
    decoder = onnx.load(str(build[1] / "build" / "decoder.onnx"))
    ops = Counter(n.op_type for n in decoder.graph.node)
    packed = sum(1 for n in decoder.graph.node if n.op_type == "GroupQueryAttention" and not n.input[1])  # Q/K/V in one MatMulNBits
    assert ops["GroupQueryAttention"] > 0  # the ORT CPU build fused the decoder
    gate_up = sum(1 for n in decoder.graph.node if n.op_type == "MatMulNBits" and n.name.endswith("_gate_up"))  # gate and up in one MatMulNBits
    assert ops["MatMulNBits"] + 2 * packed + gate_up == int4 > 0
    nbits = [n for n in decoder.graph.node if n.op_type == "MatMulNBits"]
    assert all({a.name: a.i for a in n.attribute}["bits"] == 4 and {a.name: a.i for a in n.attribute}["block_size"] == 16 for n in nbits)
    assert ops["DequantizeLinear"] > 0  # the INT8 lm_head
    vision = onnx.load(str(build[1] / "build" / "vision_encoder.onnx"))
    vops = Counter(n.op_type for n in vision.graph.node)
    assert vops["QuantizeLinear"] > 0 and vops["DequantizeLinear"] > 0 and vops["MatMulNBits"] == 0


def test_report_generative_metrics(build) -> None:  # noqa: ANN001
    report = json.loads((build[1] / "report.json").read_text())
    m = report["metrics"]
    assert report["verdict"] == "pass"
    for key in ("generation.ttft_ms", "generation.decode_tokens_per_s", "generation.token_agreement", "accuracy", "accuracy.drop", "size.decoder_mb", "size.vision_encoder_mb", "latency.decoder.p50_ms"):
        assert key in m, key
    assert 0.0 <= m["generation.token_agreement"] <= 1.0
    assert m["generation.ttft_ms"] > 0 and m["generation.decode_tokens_per_s"] > 0
    assert m["size.decoder_mb"] < 0.6 * m["size.reference_mb"]
    assert "drift.generated.tokens.cosine_mean" not in m  # token ids are compared by agreement, not cosine


@pytest.mark.parametrize(("layer", "strategy"), [(-2, "default"), ([-3, -1], "full")])
def test_vision_module_matches_hf(tmp_path, layer, strategy) -> None:  # noqa: ANN001
    from tests.tiny_llava import save_tiny_llava
    from edgecompile.models.llava import LlavaAdapter

    adapter = LlavaAdapter()
    loaded = adapter.load(save_tiny_llava(tmp_path / "m", feature_layer=layer, strategy=strategy))
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = adapter.vision_module(loaded)(pixels)
        theirs = loaded.model.model.get_image_features(pixel_values=pixels).pooler_output[0]
    assert ours.shape[1] == (17 if strategy == "full" else 16)
    np.testing.assert_allclose(ours[0].numpy(), theirs.numpy(), atol=1e-5)
