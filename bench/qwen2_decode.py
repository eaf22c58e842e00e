"""Decode speed and size of a Qwen2-0.5B-width decoder on the CPU: FP32 export vs the ORT CPU build.

A random-weight Qwen2 (hidden 896, 14 heads / 2 KV heads, intermediate 4864, 151,936-token vocabulary,
tied embeddings, qkv bias; ``--layers`` layers, 4 by default) is exported with edgecompile's
decoder-with-KV-cache export (decoder and embed_tokens graphs), planned with the ``vlm-default``
preset and built as the ORT CPU backend builds it: MatMulNBits INT4 for the decoder's linears
(onnxruntime's quantizer), GatherBlockQuantized INT4 for the embedding table, then the decoder fusion
(GroupQueryAttention with the qkv bias, SkipSimplifiedLayerNormalization, packed QKV). Decode
tokens/s (single-token steps after a prompt, prefill not timed, edgecompile's CPU session settings)
and bytes are measured in one run for both. Last line: JSON.

    OMP_NUM_THREADS=2 nice -n 10 python bench/qwen2_decode.py [--layers 4] [--steps 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from decoder_cpu import decode_rate  # noqa: E402


def _bytes(path: Path) -> int:
    from edgecompile.backends.base import artifact_bytes

    return artifact_bytes(path)


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.backends.ort_cpu.decoder_prep import prepare_decoder
    from edgecompile.backends.ort_cpu.gather_quant import quantize_gathers
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs
    from edgecompile.models.export import export_component
    from edgecompile.models.generative import EmbedTokens
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import rules_for

    tmp = Path(tempfile.mkdtemp(prefix="edgecompile-qwen2-bench-"))
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=args.layers, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)
    hf = Qwen2ForCausalLM(config).eval()
    layout = CacheLayout.from_text_config(config)
    module = DecoderWithCache(hf.model, hf.lm_head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    fp32, embed32 = tmp / "fp32" / "decoder.onnx", tmp / "fp32" / "embed_tokens.onnx"
    fp32.parent.mkdir()
    t0 = time.perf_counter()
    export_component(spec, fp32, 18)
    ids = torch.ones((1, 4), dtype=torch.int64)
    export_component(ComponentSpec("embed_tokens", EmbedTokens(hf.model.get_input_embeddings()).eval(), (ids,), ("input_ids",), ("inputs_embeds",), {"input_ids": {0: "batch", 1: "sequence"}}), embed32, 18)
    export_s = time.perf_counter() - t0
    del hf, module, spec

    graphs = {"decoder": onnx.load(str(fp32)), "embed_tokens": onnx.load(str(embed32))}
    plan = annotate(graphs, rules_for("vlm-default", (), 32), "vlm-default")
    t0 = time.perf_counter()
    int4 = insert_matmul_nbits(graphs["decoder"], plan.for_component("decoder"))
    fused, fusion_note = prepare_decoder(int4, "decoder")
    embed4, gathers = quantize_gathers(graphs["embed_tokens"], list(plan.for_component("embed_tokens")))
    build_s = time.perf_counter() - t0
    out4, embed_out4 = tmp / "int4" / "decoder.onnx", tmp / "int4" / "embed_tokens.onnx"
    out4.parent.mkdir()
    _save(fused, out4)
    _save(embed4, embed_out4)
    ops = [n.op_type for n in fused.graph.node]
    checker = {}
    for name, path in {"decoder": out4, "embed_tokens": embed_out4}.items():
        try:
            onnx.checker.check_model(str(path))
            checker[name] = "ok"
        except onnx.checker.ValidationError as exc:
            checker[name] = str(exc).splitlines()[0]
    del graphs, int4, fused, embed4

    fp32_rate = decode_rate(fp32, layout, args.prompt, args.steps, args.threads)
    int4_rate = decode_rate(out4, layout, args.prompt, args.steps, args.threads)
    sizes = {k: _bytes(p) for k, p in {"fp32_decoder": fp32, "fp32_embed": embed32, "int4_decoder": out4, "int4_embed": embed_out4}.items()}
    result = {
        "config": {"hidden": 896, "layers": args.layers, "vocab": 151936, "prompt": args.prompt, "steps": args.steps, "threads": args.threads},
        "export_s": round(export_s, 1), "build_s": round(build_s, 1), "fusion": fusion_note, "embedding_gathers_int4": gathers,
        "group_query_attention": ops.count("GroupQueryAttention"), "onnx_checker": checker,
        "fp32_tokens_per_s": round(fp32_rate, 2), "int4_tokens_per_s": round(int4_rate, 2), "decode_speedup": round(int4_rate / fp32_rate, 3),
        **{f"{k}_mb": round(v / 2**20, 1) for k, v in sizes.items()},
        "size_ratio": round((sizes["fp32_decoder"] + sizes["fp32_embed"]) / (sizes["int4_decoder"] + sizes["int4_embed"]), 3),
        "embed_size_ratio": round(sizes["fp32_embed"] / sizes["int4_embed"], 3),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
