"""Benchmark: a ViT-B/32-shaped CLIP image tower compiled by edgecompile for x86-cpu, beside
(a) the FP32 ONNX Runtime model of the same graph and (b) onnxruntime's quantize_static with its
defaults on the same graph and calibration data. All latencies are measured in one run, interleaved,
so the ratios hold on a noisy machine. Random weights: latency does not depend on their values.

    python bench/clip_cpu.py [--samples 32] [--runs 40] [--workdir DIR]

The last line printed is JSON with latency_ratio (edgecompile INT8 / FP32), peer_latency_ratio,
cosine, peer_cosine and size_ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

RECIPE = """schema_version: 1
name: bench-clip
target: x86-cpu
calibration: {{method: minmax, set: synthetic, samples: {samples}}}
eval: {{set: synthetic, samples: 16, latency_runs: 5}}
"""


def make_model(path: Path) -> Path:
    """CLIP with a ViT-B/32 image tower (and a small text tower, unused here)."""
    import torch
    from tiny_models import save_tiny_clip
    from transformers import CLIPConfig, CLIPModel

    save_tiny_clip(path, image_size=224)  # processor + tokenizer
    torch.manual_seed(0)
    config = CLIPConfig.from_pretrained(path)
    config.vision_config.update({"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224, "patch_size": 32})
    config.projection_dim = 512
    config.text_config.projection_dim = 512
    CLIPModel(config).eval().save_pretrained(path)
    return path


class _Reader:
    def __init__(self, feeds: list[dict]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def latency(sessions: dict, feed: dict, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):
        for s in sessions.values():
            s.run(None, feed)
    for _ in range(runs):
        for name, s in sessions.items():  # interleaved: every variant sees the same machine state
            start = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - start)
    return {k: float(np.median(v)) * 1000 for k, v in times.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session (1: stable on a shared machine; 0: all cores)")
    args = parser.parse_args()

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from edgecompile.runtime.onnx_cpu import cpu_session
    from edgecompile.stages.context import BuildContext
    from edgecompile.data.sources import synthetic_samples
    from edgecompile.stages.pipeline import run_until

    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgecompile-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "clip-b32" if (work / "clip-b32" / "config.json").exists() else make_model(work / "clip-b32")
    (work / "recipes").mkdir(exist_ok=True)
    (work / "targets").mkdir(exist_ok=True)
    for t in (ROOT / "targets").glob("*.yaml"):
        (work / "targets" / t.name).write_text(t.read_text())
    recipe = work / "recipes" / "bench-clip.yaml"
    recipe.write_text(RECIPE.format(samples=args.samples))

    ctx = BuildContext.create(recipe, str(model_dir), work / "build")
    start = time.perf_counter()
    run_until(ctx, "build", on_result=lambda r: print(f"  {r.stage}: {'skipped' if r.skipped else f'{r.wall_s:.1f}s'}", file=sys.stderr))
    build_s = time.perf_counter() - start
    fp32 = ctx.path("export", "vision_encoder.onnx")
    ours = ctx.path("build", "vision_encoder.onnx")

    loaded = ctx.loaded()
    calib = [f for f in ctx.adapter.calibration_feeds(loaded, synthetic_samples(args.samples, seed=1), "vision_encoder")]
    peer = work / "peer_quantize_static.onnx"
    quantize_static(str(fp32), str(peer), _Reader(calib), quant_format=QuantFormat.QDQ, calibrate_method=CalibrationMethod.MinMax)

    sessions = {"fp32": cpu_session(fp32, args.threads), "edgecompile": cpu_session(ours, args.threads), "quantize_static": cpu_session(peer, args.threads)}
    feed = {"pixel_values": calib[0]["pixel_values"]}
    lat = latency(sessions, feed, args.runs)

    evals = [f["pixel_values"] for f in ctx.adapter.calibration_feeds(loaded, synthetic_samples(16, seed=7), "vision_encoder")]
    batch = {"pixel_values": np.concatenate(evals)}
    outs = {k: s.run(None, batch)[0] for k, s in sessions.items()}
    sizes = {"fp32": fp32.stat().st_size, "edgecompile": ours.stat().st_size, "quantize_static": peer.stat().st_size}

    print(f"{'variant':<16} {'median ms':>10} {'size MB':>9} {'cosine vs fp32':>15}")
    for k in sessions:
        print(f"{k:<16} {lat[k]:>10.2f} {sizes[k] / 2**20:>9.1f} {cosine(outs['fp32'], outs[k]):>15.5f}")
    print(f"edgecompile build (export..build): {build_s:.1f}s; intra-op threads per session: {args.threads or 'all'}")
    result = {
        "latency_ratio": round(lat["edgecompile"] / lat["fp32"], 3),
        "peer_latency_ratio": round(lat["quantize_static"] / lat["fp32"], 3),
        "cosine": round(cosine(outs["fp32"], outs["edgecompile"]), 5),
        "peer_cosine": round(cosine(outs["fp32"], outs["quantize_static"]), 5),
        "size_ratio": round(sizes["edgecompile"] / sizes["fp32"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
