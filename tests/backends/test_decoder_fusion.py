"""Contrib-op fusion of an exported Llama decoder: what it matches, and parity with torch and the unfused graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder
from edgecompile.backends.ort_cpu.decoder_prep import fusion_parity, prepare_decoder
from edgecompile.models.adapter import ComponentSpec
from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs, decoder_parity
from edgecompile.models.export import export_component

LAYERS = 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecoderWithCache, CacheLayout, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, tie_word_embeddings=False)
    out = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).save_pretrained(out / "hf")
    hf = LlamaForCausalLM.from_pretrained(out / "hf").eval()
    layout = CacheLayout.from_text_config(config)
    module = DecoderWithCache(hf.model, hf.lm_head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    export_component(spec, out / "decoder.onnx", 18)
    return module, layout, out / "decoder.onnx"


def test_fp32_fusion_matches_every_layer_and_torch(exported, tmp_path: Path) -> None:  # noqa: ANN001
    module, layout, path = exported
    fused, report = fuse_decoder(onnx.load(str(path)))
    ops = [n.op_type for n in fused.graph.node]
    assert report.attentions == LAYERS and ops.count("GroupQueryAttention") == LAYERS
    # Every RMSNorm after a residual Add fuses; the first layer's lone one stays unfused at opset 18.
    assert report.rms_norms == 2 * LAYERS and report.skip_norms == 2 * LAYERS
    assert ops.count("Pow") == 1 and ops.count("ReduceMean") == 1
    assert not {"Softmax", "Neg", "Concat", "SimplifiedLayerNormalization"} & set(ops)  # attention and rotary ops are gone
    onnx.checker.check_model(fused, full_check=True)  # default-domain ops all have ONNX schemas
    assert [i.name for i in fused.graph.input] == [i.name for i in onnx.load(str(path)).graph.input]
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    parity = decoder_parity(module, layout, tmp_path / "fused.onnx", prompt_length=7, decode_steps=4)
    assert parity["prefill_cosine"] > 0.99999 and parity["decode_cosine"] > 0.99999
    assert parity["argmax_agreement"] == 1.0


def test_int4_decoder_is_fused_with_packed_qkv_and_keeps_parity(exported) -> None:  # noqa: ANN001
    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import rules_for

    graph = onnx.load(str(exported[2]))
    plan = annotate({"decoder": graph}, rules_for("vlm-default", (), 32), "vlm-default")
    int4 = insert_matmul_nbits(graph, plan.for_component("decoder"))
    model, note = prepare_decoder(int4, "decoder")
    assert note is not None and "2 GroupQueryAttention" in note and "2 packed QKV" in note and f"{LAYERS} packed gate/up" in note, note
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == sum(n.op_type == "MatMulNBits" for n in int4.graph.node) - 3 * LAYERS  # q/k/v -> 1 and gate/up -> 1 per layer
    assert fusion_parity(int4, model, prompt=9, decode_steps=4, seed=3) >= 0.999
    from edgecompile.backends.ort_cpu.decoder_attention import pack_gate_up
    from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder

    unpacked, _ = fuse_decoder(int4)
    assert fusion_parity(unpacked, pack_gate_up(unpacked)[0], prompt=9, decode_steps=4, seed=3) >= 1 - 1e-6  # packing gate/up is exact


def test_graph_without_cache_or_pattern_is_left_alone(exported) -> None:  # noqa: ANN001
    graph = onnx.load(str(exported[2]))
    encoder = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [onnx.helper.make_tensor_value_info("x", 1, [1, 4])], [onnx.helper.make_tensor_value_info("y", 1, [1, 4])]))
    assert prepare_decoder(encoder, "vision_encoder") == (encoder, None)
    # Rotary that is not rotate-half (Neg dropped): attention stays unfused, RMSNorm still fuses with parity.
    no_neg = onnx.ModelProto()
    no_neg.CopyFrom(graph)
    for node in no_neg.graph.node:
        if node.op_type == "Neg":
            node.op_type = "Identity"
    fused, report = fuse_decoder(no_neg)
    assert report.attentions == 0 and len(report.skipped) == LAYERS and report.rms_norms == 2 * LAYERS
    assert fusion_parity(no_neg, fused) > 0.99999
    # Attention the fusion would get wrong (Sigmoid instead of Softmax): parity fails, the graph is kept.
    for node in graph.graph.node:
        if node.op_type == "Softmax":
            node.op_type = "Sigmoid"
            del node.attribute[:]
    model, note = prepare_decoder(graph, "decoder")
    assert model is graph and note is not None and "lost parity" in note, note


def test_lone_rms_norm_becomes_onnx_rms_normalization_at_opset_23(exported) -> None:  # noqa: ANN001
    graph = onnx.load(str(exported[2]))
    at23 = onnx.ModelProto()
    at23.CopyFrom(graph)
    for o in at23.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 23
    at23.ir_version = max(at23.ir_version, 10)
    fused, report = fuse_decoder(at23)
    ops = [n.op_type for n in fused.graph.node]
    assert report.rms_norms == 2 * LAYERS + 1 and ops.count("RMSNormalization") == 1 and "Pow" not in ops
    onnx.checker.check_model(fused, full_check=True)
    assert fusion_parity(at23, fused) > 0.99999
