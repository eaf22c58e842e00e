"""Prefill latency of the token-pruned decoder at a real decoder width, pruned vs unpruned, in one run.

The bundled shapes-llava-next decoder is 128 wide: a layer's prefill costs about as much as one
prune step's scoring (attention probabilities, percentiles, top-k, gathers), so its latency ratio
says little about a deployed model. This builds a random-weight Qwen2-0.5B-width decoder
(``--layers`` layers, hidden 896, 14 heads / 2 KV heads, MLP 4864, qkv bias), exports it with
torch, quantizes its MatMuls to INT4 with onnxruntime's MatMulNBitsQuantizer (block 32,
accuracy level 4), fuses it (``backends.ort_cpu.decoder_fusion``) and times the prefill of a
LLaVA-1.5-shaped prompt (``--image-tokens`` image tokens after 5 text tokens, ``--text-after``
after them) for each schedule against the same graph unpruned (the mask left out). Random weights:
latency and cache sizes only, no accuracy.

    OMP_NUM_THREADS=2 PYTHONPATH=. python bench/quota_prefill.py

Last line: JSON ``{"config", "rows": [{"schedule", "prefill_ms", "ratio", "kv_ratio", "flops_ratio"}]}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder
from edgecompile.backends.ort_cpu.token_pruning import VISUAL_MASK, insert_token_pruning
from edgecompile.runtime.onnx_cpu import cpu_session
from edgecompile.validation.pruning_metrics import prefill_flops


def build_decoder(layers: int, out: Path):  # noqa: ANN201 - (fused INT4 ModelProto, text config)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from edgecompile.models.decoder_export import export_causal_lm_decoder

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
                         vocab_size=4096, max_position_embeddings=4096, tie_word_embeddings=False)
    _, layout = export_causal_lm_decoder(Qwen2ForCausalLM(config).eval(), out / "decoder.onnx")
    quantizer = MatMulNBitsQuantizer(onnx.load(str(out / "decoder.onnx")), block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    fused, report = fuse_decoder(quantizer.model.model)
    if report.attentions != layers:
        raise SystemExit(f"fusion matched {report.attentions} of {layers} layers: {report.skipped[:2]}")
    return fused, config, layout


def time_prefill(session, feeds: dict, runs: int) -> tuple[float, int, list[int]]:  # noqa: ANN001
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, feeds), strict=True))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(names, feeds)
        samples.append((time.perf_counter() - start) * 1000)
    keys = sorted((k for k in out if k.startswith("present_key_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return float(np.median(samples)), sum(out[k].nbytes + out[k.replace("key", "value")].nbytes for k in keys), [int(out[k].shape[2]) for k in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--text-after", type=int, default=24)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if args.layers < 5:
        parser.error("--layers must be at least 5: the schedules prune after layers 0, 1 and 3 and uniformly over 1..layers-2")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fused, config, layout = build_decoder(args.layers, Path(tmp))
        print(f"built: {args.layers} layers, {time.perf_counter() - start:.0f} s", flush=True)
    n = 5 + args.image_tokens + args.text_after
    rng = np.random.default_rng(0)
    mask = np.zeros((1, n), np.int64)
    mask[0, 5 : 5 + args.image_tokens] = 1
    feeds = {"inputs_embeds": (rng.standard_normal((1, n, config.hidden_size)) * 0.05).astype(np.float32), "attention_mask": np.ones((1, n), np.int64),
             "position_ids": np.arange(n, dtype=np.int64)[None], **layout.empty_past()}
    plain = cpu_session(fused.SerializeToString())
    base_ms, base_kv, base_lengths = time_prefill(plain, feeds, args.runs)
    base_flops = prefill_flops(base_lengths, config)
    print(f"unpruned      prefill {base_ms:8.1f} ms  lengths {base_lengths}", flush=True)
    last = args.layers - 2
    schedules = {
        "keep 1.0 after layer 1": {1: 1.0},
        "30% after layer 1": {1: 0.3},
        "30% after layer 0": {0: 0.3},
        "60% after 1, 30% after 3": {1: 0.6, 3: 0.3},
        f"uniform to 30% over 1..{last}": dict(zip(range(1, last + 1), np.linspace(1 - 0.7 / last, 0.3, last).round(4).tolist(), strict=True)),
    }
    rows = [{"schedule": "unpruned", "prefill_ms": round(base_ms, 2), "ratio": 1.0, "kv_ratio": 1.0, "flops_ratio": 1.0}]
    for name, schedule in schedules.items():
        pruned, _ = insert_token_pruning(fused, schedule)
        session = cpu_session(pruned.SerializeToString())
        ms, kv, lengths = time_prefill(session, {**feeds, VISUAL_MASK: mask}, args.runs)
        plain_again, _, _ = time_prefill(plain, feeds, max(3, args.runs // 2))  # the baseline re-measured beside it: the machine drifts
        row = {"schedule": name, "prefill_ms": round(ms, 2), "ratio": round(ms / plain_again, 3), "kv_ratio": round(kv / base_kv, 3),
               "flops_ratio": round(prefill_flops(lengths, config) / base_flops, 3), "layer_lengths": lengths}
        rows.append(row)
        print(f"{name:28s} prefill {ms:8.1f} ms  ({row['ratio']:.2f}x of {plain_again:.1f} ms)  KV {row['kv_ratio']:.2f}x  FLOPs {row['flops_ratio']:.2f}x  lengths {lengths}", flush=True)
    print(json.dumps({"config": {"layers": args.layers, "hidden": 896, "heads": 14, "kv_heads": 2, "intermediate": 4864, "prompt": n, "image_tokens": args.image_tokens,
                                 "int4": "MatMulNBits block 32 accuracy_level 4", "machine": platform.machine()}, "rows": rows}))


if __name__ == "__main__":
    main()
