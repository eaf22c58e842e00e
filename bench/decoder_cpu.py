"""Decode speed of a Llama-architecture decoder on the CPU: FP32 vs edgecompile INT4 vs onnxruntime-genai INT4.

A random-weight Llama (hidden 1024, 12 layers by default) is saved with save_pretrained, exported with
edgecompile's decoder-with-KV-cache export, planned with the ``vlm-default`` preset (INT4 block-wise
weight-only decoder linears; the lm_head also INT4 here, as onnxruntime-genai's builder does) and
quantized with edgecompile's MatMulNBits pass (onnxruntime's quantizer, RTN), then fused into ONNX Runtime
contrib ops by the ORT CPU build's decoder step (GroupQueryAttention, SkipSimplifiedLayerNormalization,
packed QKV; the FP32 graph is the unfused export). Both run with edgecompile's CPU session settings. Decode tokens/s is
measured in one run, same prompt length and step count, for the FP32 graph and the INT4 graph on ONNX
Runtime, and for onnxruntime-genai's model builder output (its own runtime) when the package is installed.
Last line: JSON with decode_speedup (INT4 / FP32), peer_ratio (ours / genai), size_ratio (FP32 bytes / INT4 bytes).

    PYTHONPATH=. python bench/decoder_cpu.py [--layers 12] [--hidden 1024] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch


def _session(path: Path, threads: int) -> ort.InferenceSession:
    """edgecompile's own CPU session settings (what its runner uses)."""
    from edgecompile.runtime.onnx_cpu import cpu_session

    return cpu_session(path, threads)


def decode_rate(path: Path, layout, prompt: int, steps: int, threads: int) -> float:  # noqa: ANN001
    """Tokens/s over ``steps`` single-token decode steps after a ``prompt``-token prefill (prefill not timed)."""
    session = _session(path, threads)
    rng = np.random.default_rng(0)
    past = layout.empty_past()
    feeds = {"inputs_embeds": (rng.standard_normal((1, prompt, layout.hidden)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, prompt), np.int64), "position_ids": np.arange(prompt, dtype=np.int64)[None], **past}
    names = ["logits", *layout.present_names()]
    out = session.run(names, feeds)
    start = None
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        total = prompt + step + 1
        feeds = {"inputs_embeds": (rng.standard_normal((1, 1, layout.hidden)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, total), np.int64), "position_ids": np.array([[total - 1]], np.int64), **dict(zip(layout.past_names(), out[1:], strict=True))}
        out = session.run(names, feeds)
    return steps / (time.perf_counter() - start)


def genai_rate(hf_dir: Path, out_dir: Path, prompt: int, steps: int) -> tuple[float | None, int | None, str]:
    """onnxruntime-genai's builder (INT4, CPU) and its runtime; (tokens/s, bytes, note)."""
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        return None, None, f"onnxruntime-genai not installed ({exc}); pip install onnxruntime-genai"
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", "bench-llama", "-i", str(hf_dir), "-o", str(out_dir), "-p", "int4", "-e", "cpu", "-c", str(out_dir / "cache")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, None, f"onnxruntime-genai builder failed offline: {done.stderr.strip()[-400:]}"
    size = sum(p.stat().st_size for p in out_dir.glob("*.onnx*"))
    model = og.Model(str(out_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt + steps + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.arange(1, prompt + 1, dtype=np.int32)[None])
    for _ in range(2):
        generator.generate_next_token()
    start = time.perf_counter()
    for _ in range(steps):
        generator.generate_next_token()
    return steps / (time.perf_counter() - start), size, f"onnxruntime-genai {og.__version__} builder int4 cpu"


def _word_tokenizer(vocab: int):  # noqa: ANN202
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", bos_token="w1", eos_token="w2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block", type=int, default=32)
    args = parser.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    from edgecompile.backends.ort_cpu.decoder_prep import prepare_decoder
    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs
    from edgecompile.models.export import export_component
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import PrecisionRule, RuleMatch, rules_for

    tmp = Path(tempfile.mkdtemp(prefix="edgecompile-bench-"))
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75), num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 128,
                         vocab_size=args.vocab, max_position_embeddings=2048, tie_word_embeddings=False)
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp / "hf")
    _word_tokenizer(args.vocab).save_pretrained(tmp / "hf")  # the peer's builder loads a tokenizer
    layout = CacheLayout.from_text_config(config)
    module = DecoderWithCache(hf.model, hf.lm_head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    fp32 = tmp / "decoder_fp32.onnx"
    t0 = time.perf_counter()
    export_component(spec, fp32, 18)
    export_s = time.perf_counter() - t0
    del hf, module, spec

    graph = onnx.load(str(fp32))
    lm_head_int4 = (PrecisionRule(match=RuleMatch(role="lm_head"), precision="int4", granularity="per_block", block_size=args.block, why="bench: lm_head INT4 like the peer"),)
    plan = annotate({"decoder": graph}, rules_for("vlm-default", lm_head_int4, args.block), "vlm-default")
    t0 = time.perf_counter()
    int4_model = insert_matmul_nbits(graph, plan.for_component("decoder"))
    quant_s = time.perf_counter() - t0
    int4_model, fusion_note = prepare_decoder(int4_model, "decoder")  # the ORT CPU build's decoder step
    int4 = tmp / "decoder_int4.onnx"
    onnx.save(int4_model, str(int4))
    nbits = sum(1 for n in int4_model.graph.node if n.op_type == "MatMulNBits")

    fp32_rate = decode_rate(fp32, layout, args.prompt, args.steps, args.threads)
    int4_rate = decode_rate(int4, layout, args.prompt, args.steps, args.threads)
    peer_rate, peer_bytes, peer_note = genai_rate(tmp / "hf", tmp / "genai", args.prompt, args.steps)
    fp32_bytes, int4_bytes = fp32.stat().st_size, int4.stat().st_size
    result = {
        "config": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "prompt": args.prompt, "steps": args.steps, "threads": args.threads, "int4_block": args.block},
        "export_s": round(export_s, 1), "quantize_s": round(quant_s, 1), "matmulnbits_nodes": nbits,
        "fp32_tokens_per_s": round(fp32_rate, 2), "int4_tokens_per_s": round(int4_rate, 2), "peer_tokens_per_s": None if peer_rate is None else round(peer_rate, 2),
        "fp32_mb": round(fp32_bytes / 2**20, 1), "int4_mb": round(int4_bytes / 2**20, 1), "peer_mb": None if peer_bytes is None else round(peer_bytes / 2**20, 1), "peer": peer_note, "fusion": fusion_note,
        "decode_speedup": round(int4_rate / fp32_rate, 3),
        "peer_ratio": None if peer_rate is None else round(int4_rate / peer_rate, 3),
        "size_ratio": round(fp32_bytes / int4_bytes, 3),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
