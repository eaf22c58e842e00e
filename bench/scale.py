"""Benchmark: real-size configurations (random weights) through the shipped x86-cpu recipe.

Builds each model with ``edgecompile build`` in a fresh process and prints, per model, every
stage's wall time and peak RSS (from the build manifest, which measures them per stage), the
total, each stage's peak as a multiple of the FP32 weights and pass/fail against a
recipe-independent memory bound (2x the FP32 weights + 2 GB), the largest stage peak beside that
bound, and the artifact/reference size ratio (external-data files counted). The last line is JSON.

    nice -n 10 python bench/scale.py --only clip-vit-b32 [--eval-samples 300] [--workdir DIR]

Models: ``clip-vit-b32`` (``CLIPConfig()`` defaults, 151 M), ``siglip-base-p16-224``,
``llava-qwen2-0.5b-24l`` / ``llava-qwen2-0.5b-28l`` (LLaVA, CLIP ViT-L/14-336 width vision tower
cut to 2 layers, Qwen2-0.5B-width decoder), ``qwen2-1.5b`` (LLaVA with a Qwen2-1.5B-width decoder),
and ``llava-qwen2-0.5b-6l``, the same widths at 6 layers: a proxy for profiling memory in minutes.

Random weights cannot pass accuracy gates (the float reference scores chance, and the verdict
machinery refuses accuracy that compares chance with chance), so the recipe is the shipped
``recipes/x86-cpu.yaml`` with ``eval.set: synthetic`` (drift, parity, latency; same sample count)
and its ``gates`` replaced by parity/drift/compression gates only; every other setting
(calibration, quantization, comparison and per-layer attribution) is the shipped one. Say so
when quoting the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

GATES = """gates:
  - {name: image embedding drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.99, family: dual_encoder}
  - {name: text embedding drift, metric: drift.text_encoder.text_embeds.cosine_mean, min: 0.99, family: dual_encoder}
  - {name: token agreement, metric: generation.token_agreement, min: 0.5, family: generative}
  - {name: compression, metric: size.compression_ratio, min: 2.0}
budget_gates: false
"""


def recipe_variant(out: Path, eval_samples: int | None) -> Path:
    """The shipped x86-cpu recipe with parity-only gates (and optionally fewer eval samples)."""
    text = (ROOT / "recipes" / "x86-cpu.yaml").read_text()
    head = text[: text.index("gates:")].replace("name: x86-cpu", "name: x86-cpu-scale")
    # eval.set auto is the bundled shapes world, which refuses a model not trained on it (chance
    # against chance): random weights are measured on the synthetic set (drift, parity, latency).
    head = head.replace("  set: auto ", "  set: synthetic ")
    if eval_samples is not None:
        head = head.replace("samples: 300", f"samples: {eval_samples}")
    path = out / "x86-cpu-scale.yaml"
    path.write_text(head + GATES)
    return path


def _clip(path: Path) -> Path:
    import torch
    from tiny_models import save_tiny_clip
    from transformers import CLIPConfig, CLIPModel

    save_tiny_clip(path, image_size=224)  # processor + tokenizer (word-level ids are valid CLIP ids)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).eval().save_pretrained(path)
    return path


def _siglip(path: Path) -> Path:
    import torch
    from tiny_models import save_tiny_siglip
    from transformers import SiglipConfig, SiglipModel

    save_tiny_siglip(path, image_size=224)
    torch.manual_seed(0)
    config = SiglipConfig(vision_config={"image_size": 224, "patch_size": 16}, text_config={"max_position_embeddings": 64})
    SiglipModel(config).eval().save_pretrained(path)
    return path


def _llava(path: Path, *, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int) -> Path:
    import torch
    from tiny_llava import save_tiny_llava
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from transformers import Qwen2Config

    save_tiny_llava(path)  # processor, tokenizer, chat template (overwritten weights below)

    text = Qwen2Config(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    config = LlavaConfig(vision_config={"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2, "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768},
                         text_config=text.to_dict(), image_token_id=4, vision_feature_layer=-2, vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = 3
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path)
    from transformers import CLIPImageProcessor, LlavaProcessor

    processor = LlavaProcessor.from_pretrained(path)
    processor.image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor.patch_size = 14
    processor.save_pretrained(path)
    return path


QWEN05 = dict(hidden=896, intermediate=4864, heads=14, kv_heads=2, vocab=151936)
MODELS = {
    "clip-vit-b32": _clip,
    "siglip-base-p16-224": _siglip,
    "llava-qwen2-0.5b-24l": lambda p: _llava(p, layers=24, **QWEN05),
    "llava-qwen2-0.5b-28l": lambda p: _llava(p, layers=28, **QWEN05),
    # Proxy for profiling memory: the same widths (and 152k vocabulary), few layers, minutes not half an hour.
    "llava-qwen2-0.5b-6l": lambda p: _llava(p, layers=6, **QWEN05),
    "qwen2-1.5b": lambda p: _llava(p, hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936),
}
PROXIES = ("llava-qwen2-0.5b-6l",)  # profiling proxies: run only when named with --only


def _params_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def memory_bound_gb(fp32_weights_gb: float) -> float:
    """The recipe-independent bound every stage's peak RSS is held to: 2x the FP32 weights + 2 GB (1e9 bytes)."""
    return 2 * fp32_weights_gb + 2


def stage_memory(record: dict, fp32_weights_gb: float, bound_gb: float) -> dict:
    """One stage's wall time and peak RSS (``peak_rss_gb`` in GiB, as earlier figures were quoted), its
    multiple of the FP32 weights (what extrapolates from a few-layer proxy) and pass/fail against the
    bound, both computed in bytes."""
    peak_bytes = record["peak_rss_mb"] * 2**20
    return {"wall_s": round(record["wall_s"], 1), "peak_rss_gb": round(record["peak_rss_mb"] / 1024, 2),
            "x_fp32": round(peak_bytes / (fp32_weights_gb * 1e9), 2) if fp32_weights_gb else None, "within_memory_bound": peak_bytes <= bound_gb * 1e9}


def run_one(name: str, work: Path, recipe: Path) -> dict:
    model_dir = work / name / "model"
    if not (model_dir / "config.json").is_file():
        MODELS[name](model_dir)
    build = work / name / "build"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgecompile.cli.main", "build", "--recipe", str(recipe), "--model", str(model_dir), "--out", str(build), "--force"], env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    report_file = build / "report.json"
    row: dict = {"model": name, "exit_code": proc.returncode, "total_s": round(total, 1), "fp32_weights_gb": round(_params_bytes(model_dir) / 1e9, 3)}
    if not report_file.is_file():
        row["error"] = (proc.stderr or proc.stdout)[-2000:]
        return row
    report = json.loads(report_file.read_text())
    # The manifest, not report.json: the report is written inside validate, before validate's own figures exist.
    recorded = json.loads((build / "manifest.json").read_text())["stages"]
    bound = memory_bound_gb(row["fp32_weights_gb"])
    stages = {k: stage_memory(v, row["fp32_weights_gb"], bound) for k, v in recorded.items()}
    m = report["metrics"]
    peak = max(v["peak_rss_gb"] for v in stages.values())
    row.update({
        "verdict": report["verdict"], "stages": stages, "stage_wall_sum_s": round(sum(v["wall_s"] for v in stages.values()), 1),
        "max_stage_peak_rss_gb": peak, "memory_bound_gb": round(bound, 2), "within_memory_bound": all(v["within_memory_bound"] for v in stages.values()),
        "stages_over_memory_bound": [k for k, v in stages.items() if not v["within_memory_bound"]],
        "size_reference_mb": round(m.get("size.reference_mb", 0), 1), "size_artifact_mb": round(m.get("size.artifact_mb", 0), 1),
        "artifact_over_reference": round(m["size.artifact_mb"] / m["size.reference_mb"], 4) if m.get("size.reference_mb") else None,
        "compression_ratio": m.get("size.compression_ratio"), "failed_gates": [g["name"] for g in report["gates"] if g["status"] == "failed"],
        "layers_attributed": m.get("layers.max_added_error") is not None, "decode_tokens_per_s": m.get("generation.decode_tokens_per_s"),
    })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(MODELS), action="append", help="run only this model (repeatable)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/edgecompile-scale"))
    parser.add_argument("--eval-samples", type=int, default=None, help="override the recipe's eval.samples (default: the shipped 300)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_variant(args.workdir, args.eval_samples)
    rows = []
    for name in args.only or [m for m in MODELS if m not in PROXIES]:
        row = run_one(name, args.workdir, recipe)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(json.dumps({"recipe": "x86-cpu with parity/drift/compression gates only (random weights)", "results": rows}))


if __name__ == "__main__":
    main()
