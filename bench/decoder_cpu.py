"""Decode speed of a Llama-architecture decoder on the CPU: FP32 vs edgecompile INT4 (FP32 and INT8 KV cache) vs onnxruntime-genai INT4.

A random-weight Llama (hidden 1024, 12 layers by default) is saved with save_pretrained, exported with
edgecompile's decoder-with-KV-cache export, planned with the ``vlm-default`` preset (INT4 block-wise
weight-only decoder linears; the lm_head also INT4 here, as onnxruntime-genai's builder does) and
quantized with edgecompile's MatMulNBits pass (onnxruntime's quantizer, RTN), then fused into ONNX Runtime
contrib ops by the ORT CPU build's decoder step (GroupQueryAttention, SkipSimplifiedLayerNormalization,
packed QKV) and the packed MLP gate/up (decoder_attention.pack_gate_up); the FP32 graph is the unfused export.
A copy of the INT4 graph gets the INT8 KV cache (kv_cache.quantize_kv_cache, scales calibrated on the FP32
graph's prefill of four random-embedding prompts). The FP32 graph runs the generic loop (numpy feeds); the INT4 graphs run the runtime's ORT CPU
fast path (runtime.ort_decode: shared in-place cache buffer, I/O binding, edgecompile's CPU session
settings); onnxruntime-genai's model builder output runs in its own runtime (past_present_share_buffer,
the same intra-op thread count). The INT4 runners and the peer are timed interleaved (alternating chunks
of steps, after a prefill of the same length), so load from other processes falls on all of them.
Last line: JSON with decode_speedup (INT4 / FP32), peer_ratio (ours / genai, FP32 cache), peer_ratio_int8_kv,
peer_ratio_best_chunk (fastest chunk against fastest chunk: the nearest a shared machine gets to an idle one),
the KV cache bytes of both caches at the bench's maximum length, size_ratio (FP32 bytes / INT4 bytes).

    PYTHONPATH=. python bench/decoder_cpu.py [--layers 12] [--hidden 1024] [--steps 32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
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
    """Tokens/s of the generic loop (numpy feeds, a new cache every step) over ``steps`` decode steps after a ``prompt``-token prefill."""
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


class OursStepper:
    """edgecompile's runtime fast path (runtime.ort_decode.OrtDecoder: shared in-place cache, I/O binding), fed random embeddings."""

    def __init__(self, path: Path, layout, prompt: int, max_length: int, threads: int) -> None:  # noqa: ANN001
        from edgecompile.runtime.ort_decode import OrtDecoder

        self.decoder = OrtDecoder(_session(path, threads), layout.layers, max_length)
        self.rng = np.random.default_rng(0)
        self.decoder.prefill((self.rng.standard_normal((1, prompt, layout.hidden)) * 0.02).astype(np.float32), np.arange(prompt, dtype=np.int64)[None])
        self.embeds = (self.rng.standard_normal((max_length, layout.hidden)) * 0.02).astype(np.float32)
        self.position = np.zeros((1, 1), np.int64)

    def step(self) -> None:
        n = self.decoder.length
        self.decoder.embeds[0, 0] = self.embeds[n]
        self.position[0, 0] = n
        int(np.argmax(self.decoder.step(None, self.position)))  # the token choice, as generation makes it

    @property
    def cache_bytes(self) -> int:
        return self.decoder.cache_bytes


class GenaiStepper:
    """onnxruntime-genai's generator on its builder's model (its own runtime, greedy), ``threads`` intra-op threads."""

    def __init__(self, model_dir: Path, prompt: int, max_length: int, threads: int) -> None:
        import onnxruntime_genai as og

        config_file = model_dir / "genai_config.json"
        config = json.loads(config_file.read_text())
        config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads  # the same thread count as ours
        config_file.write_text(json.dumps(config, indent=1))
        self.model = og.Model(str(model_dir))
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, do_sample=False)
        self.generator = og.Generator(self.model, params)
        self.generator.append_tokens(np.arange(1, prompt + 1, dtype=np.int32)[None])

    def step(self) -> None:
        self.generator.generate_next_token()


def interleaved_rates(steppers: dict, steps: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:  # noqa: ANN001
    """(tokens/s, best-chunk tokens/s) of each stepper, timed in ``rounds`` alternating chunks of steps/rounds (after 2
    warm-up steps each): load from other processes on a shared machine falls on all of them alike, and the best
    chunk is the nearest this machine gets to an idle one."""
    for stepper in steppers.values():
        for _ in range(2):
            stepper.step()
    spent, best = dict.fromkeys(steppers, 0.0), dict.fromkeys(steppers, float("inf"))
    chunk = max(1, steps // rounds)
    for r in range(rounds):
        order = list(steppers) if r % 2 == 0 else list(steppers)[::-1]
        for name in order:
            start = time.perf_counter()
            for _ in range(chunk):
                steppers[name].step()
            took = time.perf_counter() - start
            spent[name] += took
            best[name] = min(best[name], took)
    return {name: chunk * rounds / t for name, t in spent.items()}, {name: chunk / t for name, t in best.items()}


def genai_build(hf_dir: Path, out_dir: Path) -> tuple[bool, int | None, str]:
    """onnxruntime-genai's builder (INT4, CPU): (built, bytes, note)."""
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        return False, None, f"onnxruntime-genai not installed ({exc}); pip install onnxruntime-genai"
    if not (out_dir / "genai_config.json").exists():
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-m", "bench-llama", "-i", str(hf_dir), "-o", str(out_dir), "-p", "int4", "-e", "cpu", "-c", str(out_dir / "cache")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return False, None, f"onnxruntime-genai builder failed offline: {done.stderr.strip()[-400:]}"
    size = sum(p.stat().st_size for p in out_dir.glob("*.onnx*"))
    return True, size, f"onnxruntime-genai {og.__version__} builder int4 cpu"


def bench_kv_bounds(fp32: Path, layout, prompt: int, samples: int = 4) -> dict:  # noqa: ANN001
    """INT8 cache scales calibrated like a build does (kv_cache.calibrate_kv_ranges), on the bench's own random-embedding prompts."""
    from edgecompile.backends.ort_cpu.kv_cache import calibrate_kv_ranges

    rng = np.random.default_rng(1)
    feeds = ({"inputs_embeds": (rng.standard_normal((1, prompt, layout.hidden)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, prompt), np.int64), "position_ids": np.arange(prompt, dtype=np.int64)[None], **layout.empty_past()} for _ in range(samples))
    return calibrate_kv_ranges(fp32, feeds, "per_channel")


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
    parser.add_argument("--rounds", type=int, default=8, help="alternating timed chunks per runner (interleaved)")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it (profiling); default: a temporary folder, removed")
    args = parser.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    from edgecompile.backends.ort_cpu.decoder_attention import pack_gate_up
    from edgecompile.backends.ort_cpu.decoder_prep import prepare_decoder
    from edgecompile.backends.ort_cpu.kv_cache import quantize_kv_cache
    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs
    from edgecompile.models.export import export_component
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import PrecisionRule, RuleMatch, rules_for

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="edgecompile-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75), num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 128,
                         vocab_size=args.vocab, max_position_embeddings=2048, tie_word_embeddings=False)
    layout = CacheLayout.from_text_config(config)
    fp32 = tmp / "decoder_fp32.onnx"
    t0 = time.perf_counter()
    if not fp32.exists():  # --keep: a folder built before is reused (same seed, same model)
        hf = LlamaForCausalLM(config).eval()
        hf.save_pretrained(tmp / "hf")
        _word_tokenizer(args.vocab).save_pretrained(tmp / "hf")  # the peer's builder loads a tokenizer
        module = DecoderWithCache(hf.model, hf.lm_head, layout.layers).eval()
        spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
        export_component(spec, fp32, 18)
        del hf, module, spec
    export_s = time.perf_counter() - t0

    graph = onnx.load(str(fp32))
    lm_head_int4 = (PrecisionRule(match=RuleMatch(role="lm_head"), precision="int4", granularity="per_block", block_size=args.block, why="bench: lm_head INT4 like the peer"),)
    plan = annotate({"decoder": graph}, rules_for("vlm-default", lm_head_int4, args.block), "vlm-default")
    t0 = time.perf_counter()
    int4_model = insert_matmul_nbits(graph, plan.for_component("decoder"))
    quant_s = time.perf_counter() - t0
    int4_model, fusion_note = prepare_decoder(int4_model, "decoder")  # the ORT CPU build's decoder step

    model_int4, gate_up = pack_gate_up(int4_model)
    int4 = tmp / "decoder_int4.onnx"
    onnx.save(model_int4, str(int4))
    nbits = sum(1 for n in model_int4.graph.node if n.op_type == "MatMulNBits")
    int8_kv = tmp / "decoder_int4_kv8.onnx"
    onnx.save(quantize_kv_cache(model_int4, bench_kv_bounds(fp32, layout, args.prompt), "per_channel"), str(int8_kv))

    fp32_rate = decode_rate(fp32, layout, args.prompt, args.steps, args.threads)
    max_length = args.prompt + args.steps + 4
    peer_ok, peer_bytes, peer_note = genai_build(tmp / "hf", tmp / "genai")
    steppers = {"ours": OursStepper(int4, layout, args.prompt, max_length, args.threads), "ours_int8_kv": OursStepper(int8_kv, layout, args.prompt, max_length, args.threads)}
    if peer_ok:
        steppers["peer"] = GenaiStepper(tmp / "genai", args.prompt, max_length, args.threads)
    rates, best = interleaved_rates(steppers, args.steps, args.rounds)
    fp32_bytes, int4_bytes = fp32.stat().st_size, int4.stat().st_size
    peer_rate = rates.get("peer")
    result = {
        "config": {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab, "prompt": args.prompt, "steps": args.steps, "threads": args.threads, "int4_block": args.block, "rounds": args.rounds},
        "export_s": round(export_s, 1), "quantize_s": round(quant_s, 1), "matmulnbits_nodes": nbits, "gate_up_packed": gate_up,
        "fp32_tokens_per_s": round(fp32_rate, 2), "int4_tokens_per_s": round(rates["ours"], 2), "int4_int8_kv_tokens_per_s": round(rates["ours_int8_kv"], 2),
        "peer_tokens_per_s": None if peer_rate is None else round(peer_rate, 2),
        "kv_cache_fp32_bytes": steppers["ours"].cache_bytes, "kv_cache_int8_bytes": steppers["ours_int8_kv"].cache_bytes, "kv_cache_positions": max_length,
        "fp32_mb": round(fp32_bytes / 2**20, 1), "int4_mb": round(int4_bytes / 2**20, 1), "peer_mb": None if peer_bytes is None else round(peer_bytes / 2**20, 1), "peer": peer_note, "fusion": fusion_note,
        "decode_speedup": round(rates["ours"] / fp32_rate, 3),
        "peer_ratio": None if peer_rate is None else round(rates["ours"] / peer_rate, 3),
        "peer_ratio_int8_kv": None if peer_rate is None else round(rates["ours_int8_kv"] / peer_rate, 3),
        "size_ratio": round(fp32_bytes / int4_bytes, 3),
        "best_chunk_tokens_per_s": {k: round(v, 2) for k, v in best.items()},
        "peer_ratio_best_chunk": None if peer_rate is None else round(best["ours"] / best["peer"], 3),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "spinning": "ours: intra-op spinning off (runtime.onnx_cpu.cpu_session); peer: onnxruntime-genai's default (on)",
    }
    if args.keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
