"""The decoder's norms fused by onnxscript's ort_fusions rules, for every family whose decoder fuses today.

Llama, Qwen2 (q/k/v biases), Mistral and Gemma (its (1 + w) norm weight): each residual Add + RMSNorm
becomes one SkipSimplifiedLayerNormalization, the lone first norm stays ONNX ops at opset 18 (no
default-domain SimplifiedLayerNormalization left for onnx.checker to refuse), our GroupQueryAttention
fusion still finds every layer after the rewrite, and logits match torch in prefill and decode.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder
from edgecompile.backends.ort_cpu.decoder_prep import fusion_parity
from edgecompile.backends.ort_cpu.onnxscript_norms import fuse_norms
from edgecompile.models.adapter import ComponentSpec
from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs, decoder_parity
from edgecompile.models.export import export_component

LAYERS = 1
FAMILIES = ("llama", "qwen2", "mistral", "gemma")
_EXPORTED: dict[str, tuple[DecoderWithCache, CacheLayout, Path]] = {}


def _export(family: str, factory: pytest.TempPathFactory) -> tuple[DecoderWithCache, CacheLayout, Path]:
    """A LAYERS-layer decoder of ``family`` exported once per test session."""
    if family not in _EXPORTED:
        _EXPORTED[family] = _export_now(family, factory.mktemp(family))
    return _EXPORTED[family]


def _export_now(family: str, out: Path) -> tuple[DecoderWithCache, CacheLayout, Path]:
    import transformers as tf

    config_cls, model_cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
                             "mistral": (tf.MistralConfig, tf.MistralForCausalLM), "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM)}[family]
    torch.manual_seed(0)
    config = config_cls(hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96,
                        max_position_embeddings=128, tie_word_embeddings=False)
    hf = model_cls(config).eval()
    with torch.no_grad():  # norm weights away from their init (ones; zeros for Gemma's 1 + w) and live biases, so a dropped weight shows
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(0.0 if family == "gemma" else 1.0, 0.3)
            elif name.endswith("proj.bias"):
                p.normal_(0.0, 0.5)
        hf.lm_head.weight.mul_(8.0)  # sharper logits: greedy tokens are stable
    layout = CacheLayout.from_text_config(config)
    module = DecoderWithCache(hf.model, hf.lm_head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    export_component(spec, out / f"{family}.onnx", 18)
    return module, layout, out / f"{family}.onnx"


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[DecoderWithCache, CacheLayout, Path]:
    return _export(request.param, tmp_path_factory)


def test_norms_fused_by_onnxscript_and_attention_still_found(exported, tmp_path: Path) -> None:  # noqa: ANN001
    module, layout, path = exported
    graph = onnx.load(str(path))
    untouched = graph.SerializeToString()
    pows = sum(n.op_type == "Pow" for n in graph.graph.node)  # Gemma's tanh GELU has Pows of its own
    fused, report = fuse_decoder(graph)
    assert graph.SerializeToString() == untouched  # the input graph is kept as it was (prepare_decoder may return it)
    ops = [n.op_type for n in fused.graph.node]
    assert report.skip_norms == report.rms_norms == ops.count("SkipSimplifiedLayerNormalization") == 2 * LAYERS
    assert report.attentions == ops.count("GroupQueryAttention") == LAYERS, report.skipped
    assert ops.count("Pow") == pows - 2 * LAYERS and "SimplifiedLayerNormalization" not in ops and "Softmax" not in ops
    skips = [n for n in fused.graph.node if n.op_type == "SkipSimplifiedLayerNormalization"]
    assert all(list(n.output[1:3]) == ["", ""] for n in skips)  # mean / inv_std_var not computed
    onnx.checker.check_model(fused, full_check=True)
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    parity = decoder_parity(module, layout, tmp_path / "fused.onnx", prompt_length=7, decode_steps=3)
    assert parity["prefill_cosine"] > 0.99999 and parity["decode_cosine"] > 0.99999, parity
    assert parity["max_abs_error"] < 1e-3 and parity["argmax_agreement"] == 1.0, parity
    assert fusion_parity(graph, fused, prompt=7, decode_steps=3) > 0.99999


def test_norm_fusion_reads_a_graph_stored_with_external_data(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _, _, path = _export("llama", tmp_path_factory)
    onnx.save(onnx.load(str(path)), str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    graph = onnx.load(str(tmp_path / "ext.onnx"))  # what the ORT CPU build does: weights read into memory
    fused, norms, skips = fuse_norms(graph, 18)
    assert norms == skips == 2 * LAYERS
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in fused.graph.initializer)
    assert fusion_parity(graph, fused) > 0.99999
    # A graph whose opset has RMSNormalization gets it for the lone norm instead of the original ops.
    for o in graph.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 23
    graph.ir_version = max(graph.ir_version, 10)
    at23, norms, skips = fuse_norms(graph, 23)
    assert norms == skips + 1 and [n.op_type for n in at23.graph.node].count("RMSNormalization") == 1
    assert fusion_parity(graph, at23) > 0.99999
