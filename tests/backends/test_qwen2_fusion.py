"""Qwen2 decoders (q/k/v projections with biases) fuse into GroupQueryAttention like Llama's, INT4 QKV packed with the biases."""

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
    from transformers import LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    torch.manual_seed(0)
    text = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, tie_word_embeddings=True)
    config = LlavaConfig(vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 32}, text_config=text.to_dict(), image_token_id=4)
    out = tmp_path_factory.mktemp("llava_qwen2")
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # Qwen2 initializes q/k/v biases to zero: make them matter (and distinct)
        for layer in model.model.language_model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
        model.lm_head.weight.mul_(8.0)  # sharper logits: greedy tokens are stable
    model.save_pretrained(out / "hf")
    hf = LlavaForConditionalGeneration.from_pretrained(out / "hf").eval()
    assert hf.config.text_config.model_type == "qwen2"
    layout = CacheLayout.from_text_config(hf.config.text_config)
    module = DecoderWithCache(hf.model.language_model, hf.lm_head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    export_component(spec, out / "decoder.onnx", 18)
    return module, layout, out / "decoder.onnx"


def test_qwen2_attention_fused_with_bias_and_keeps_tokens(exported, tmp_path: Path) -> None:  # noqa: ANN001
    module, layout, path = exported
    graph = onnx.load(str(path))
    assert sum(n.op_type == "Add" and any("proj.bias" in i for i in n.input) for n in graph.graph.node) >= 3 * LAYERS
    fused, report = fuse_decoder(graph)
    ops = [n.op_type for n in fused.graph.node]
    assert report.attentions == LAYERS and ops.count("GroupQueryAttention") == LAYERS, report.skipped
    assert not {"Softmax", "Neg"} & set(ops)
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    parity = decoder_parity(module, layout, tmp_path / "fused.onnx", prompt_length=7, decode_steps=4)
    assert parity["prefill_cosine"] > 0.9999 and parity["decode_cosine"] > 0.9999
    assert parity["argmax_agreement"] == 1.0  # token agreement with torch (and so with the unfused graph)
    assert fusion_parity(graph, fused, prompt=7, decode_steps=4) > 0.9999


def test_qwen2_int4_qkv_packed_with_biases(exported) -> None:  # noqa: ANN001
    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import rules_for

    graph = onnx.load(str(exported[2]))
    plan = annotate({"decoder": graph}, rules_for("vlm-default", (), 32), "vlm-default")
    int4 = insert_matmul_nbits(graph, plan.for_component("decoder"))
    model, note = prepare_decoder(int4, "decoder")
    assert note is not None and f"{LAYERS} GroupQueryAttention" in note and f"{LAYERS} packed QKV" in note, note
    biased = [n for n in model.graph.node if n.op_type == "Add" and n.name.endswith("_qkv_bias_add")]
    assert len(biased) == LAYERS
    assert fusion_parity(int4, model, prompt=9, decode_steps=4, seed=3) >= 0.999


def test_embedding_table_int4_per_plan_on_ort_cpu_float_elsewhere(exported, tmp_path: Path) -> None:  # noqa: ANN001
    import numpy as np

    from edgecompile.backends.ort_cpu.backend import OrtCpuBackend
    from edgecompile.backends.ort_cpu.gather_quant import quantize_gathers
    from edgecompile.backends.tensorrt.backend import TensorRtBackend
    from edgecompile.config.target import load_target
    from edgecompile.models.generative import EmbedTokens
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import rules_for
    from edgecompile.runtime.onnx_cpu import cpu_session

    embed = EmbedTokens(exported[0].model.embed_tokens).eval()
    ids = torch.tensor([[1, 5, 17, 95]])
    spec = ComponentSpec("embed_tokens", embed, (ids,), ("input_ids",), ("inputs_embeds",), {"input_ids": {0: "batch", 1: "sequence"}})
    export_component(spec, tmp_path / "embed_tokens.onnx", 18)
    graph = onnx.load(str(tmp_path / "embed_tokens.onnx"))
    plan = annotate({"embed_tokens": graph}, rules_for("vlm-default", (), 32), "vlm-default")
    (entry,) = [e for e in plan.for_component("embed_tokens") if e.op_type == "Gather"]
    assert entry.role == "embeddings" and entry.precision == "int4" and "embedding" in entry.why
    target = load_target(Path(__file__).resolve().parents[2] / "targets" / "x86-cpu.yaml")
    assert OrtCpuBackend().adapt_plan(plan, target, {}, {"embed_tokens": graph}).for_component("embed_tokens")[0].precision == "int4"
    kept = TensorRtBackend().adapt_plan(plan, target, {}, {"embed_tokens": graph}).for_component("embed_tokens")
    assert kept[0].precision == "float" and "gather" in kept[0].why  # a backend without the kernel keeps the table float, says why
    fp32 = sum(i.ByteSize() for i in graph.graph.initializer)
    quantized, done = quantize_gathers(graph, plan.for_component("embed_tokens"))  # in place, as the backend uses it
    assert done == [entry.node] and [n.op_type for n in quantized.graph.node].count("GatherBlockQuantized") == 1
    graph = onnx.load(str(tmp_path / "embed_tokens.onnx"))
    assert sum(i.ByteSize() for i in quantized.graph.initializer) < 0.25 * fp32
    feed = {"input_ids": np.array([[1, 5, 17, 95, 0, 3]], np.int64)}
    ref, got = (cpu_session(m.SerializeToString()).run(None, feed)[0] for m in (graph, quantized))
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.99, cos
