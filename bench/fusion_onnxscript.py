"""The ORT CPU decoder fusion's norms: our hand-written matcher (before) vs onnxscript's ort_fusions rules (now).

"Before" is ``decoder_fusion.py`` as it was at commit ``BEFORE`` (read with ``git show``, so this
needs the repository's history); "now" is the working tree's ``fuse_decoder``. Both then run the
same GroupQueryAttention fusion and QKV packing (decoder_attention), so what differs is the norm
rewrite. Measured in one run:

* code size of the fusion files before/after: physical lines (``wc -l``) and code lines (no blank
  lines, comments or docstrings);
* per decoder (tiny Llama / Qwen2 / Mistral / Gemma of ``hidden`` 64, the bundled shapes-llava, FP32;
  and a ``--layers``-layer Llama, ``--hidden`` wide, INT4 MatMulNBits as the ORT CPU build makes it):
  the count of each fused op, the fusion's wall time, logits cosine / max-abs difference against the
  unfused graph (prefill from an empty cache, then single-token decode steps, each graph fed its own
  cache);
* decode tokens/s of the big INT4 decoder, both fusions interleaved round by round in this process
  (``--threads`` intra-op threads): median and best round per path, and the ratios now / before
  (on a loaded machine the best round is the steadier figure).

    PYTHONPATH=. python bench/fusion_onnxscript.py [--layers 12] [--hidden 1024] [--steps 32] [--rounds 7] [--threads 2]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import statistics
import subprocess
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "691cbc9"  # the last commit with the hand-written norm fusion
FUSION_FILES = ["decoder_fusion.py", "fusion_graph.py", "decoder_prep.py", "decoder_attention.py"]
NEW_FILES = ["onnxscript_norms.py"]
FUSED_OPS = ("SkipSimplifiedLayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization", "GroupQueryAttention", "MatMulNBits", "Pow")


def _git_show(rev: str, rel: str) -> str | None:
    done = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def code_lines(source: str) -> int:
    """Lines that are not blank, not comments and not docstrings."""
    tree = ast.parse(source)
    doc: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    return sum(1 for i, line in enumerate(source.splitlines(), 1) if i not in doc and line.strip() and not line.strip().startswith("#"))


def code_size() -> dict:
    base = "edgecompile/backends/ort_cpu/"
    out: dict = {"before_rev": BEFORE, "files": {}}
    for name in FUSION_FILES + NEW_FILES:
        before, now = _git_show(BEFORE, base + name), (ROOT / base / name).read_text() if (ROOT / base / name).exists() else None
        out["files"][name] = {k: None if s is None else {"lines": len(s.splitlines()), "code_lines": code_lines(s)} for k, s in (("before", before), ("now", now))}
    for k in ("before", "now"):
        for unit in ("lines", "code_lines"):
            norm_files = ["decoder_fusion.py", *NEW_FILES]
            out[f"norm_fusion_{unit}_{k}"] = sum((out["files"][f][k] or {}).get(unit, 0) for f in norm_files)
            out[f"all_fusion_{unit}_{k}"] = sum((v[k] or {}).get(unit, 0) for v in out["files"].values())
    return out


def before_fuse_decoder():  # noqa: ANN201
    """``fuse_decoder`` of decoder_fusion.py at BEFORE, run against today's attention fusion."""
    source = _git_show(BEFORE, "edgecompile/backends/ort_cpu/decoder_fusion.py")
    if source is None:
        raise SystemExit(f"bench/fusion_onnxscript.py needs the git history (commit {BEFORE}) for the 'before' fusion")
    module = types.ModuleType("decoder_fusion_before")
    exec(compile(source, f"decoder_fusion.py@{BEFORE}", "exec"), module.__dict__)  # noqa: S102 - our own file at a pinned commit
    return module.fuse_decoder


def _session(model: onnx.ModelProto | Path, threads: int):  # noqa: ANN202
    from edgecompile.runtime.onnx_cpu import cpu_session

    return cpu_session(model if isinstance(model, Path) else model.SerializeToString(), threads)


def _feeds(layout, rng, done: int, length: int) -> dict:  # noqa: ANN001
    return {"inputs_embeds": (rng.standard_normal((1, length, layout.hidden)) * 0.02).astype(np.float32), "attention_mask": np.ones((1, done + length), np.int64),
            "position_ids": np.arange(done, done + length, dtype=np.int64)[None]}


def parity(layout, reference: onnx.ModelProto, fused: onnx.ModelProto, prompt: int = 7, steps: int = 4) -> dict:  # noqa: ANN001
    """Logits cosine / max |diff| of ``fused`` vs ``reference``: prefill, then the worst decode step."""
    sessions = [_session(m, 1) for m in (reference, fused)]
    names = ["logits", *layout.present_names()]
    pasts = [layout.empty_past() for _ in sessions]
    rng, done, out = np.random.default_rng(0), 0, {}
    for step, length in enumerate((prompt, *[1] * steps)):
        feeds = _feeds(layout, rng, done, length)
        got = [s.run(names, {**feeds, **p}) for s, p in zip(sessions, pasts, strict=True)]
        a, b = got[0][0].astype(np.float64).ravel(), got[1][0].astype(np.float64).ravel()
        cos, diff = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)), float(np.abs(a - b).max())
        phase = "prefill" if step == 0 else "decode"
        out[f"{phase}_cosine"] = min(out.get(f"{phase}_cosine", 1.0), round(cos, 8))
        out[f"{phase}_max_abs"] = max(out.get(f"{phase}_max_abs", 0.0), float(f"{diff:.3g}"))
        pasts = [dict(zip(layout.past_names(), g[1:], strict=True)) for g in got]
        done += length
    return out


def decode_rate(session, layout, prompt: int, steps: int) -> float:  # noqa: ANN001
    rng = np.random.default_rng(0)
    names = ["logits", *layout.present_names()]
    out = session.run(names, {**_feeds(layout, rng, 0, prompt), **layout.empty_past()})
    done = prompt
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        out = session.run(names, {**_feeds(layout, rng, done, 1), **dict(zip(layout.past_names(), out[1:], strict=True))})
        done += 1
    return steps / (time.perf_counter() - start)


def export(module_fn, config, path: Path):  # noqa: ANN001, ANN201
    from edgecompile.models.adapter import ComponentSpec
    from edgecompile.models.decoder_export import CacheLayout, DecoderWithCache, decoder_dynamic_axes, decoder_example_inputs
    from edgecompile.models.export import export_component

    model, head = module_fn()
    layout = CacheLayout.from_text_config(config)
    module = DecoderWithCache(model, head, layout.layers).eval()
    spec = ComponentSpec("decoder", module, decoder_example_inputs(layout), ("inputs_embeds", "attention_mask", "position_ids", *layout.past_names()), ("logits", *layout.present_names()), decoder_dynamic_axes(layout))
    export_component(spec, path, 18)
    return layout


def tiny_decoders(tmp: Path) -> dict:
    """(layout, path) of the tiny families and the bundled shapes-llava decoder."""
    import transformers as tf

    found = {}
    kinds = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM), "mistral": (tf.MistralConfig, tf.MistralForCausalLM), "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM)}
    for name, (config_cls, model_cls) in kinds.items():
        torch.manual_seed(0)
        config = config_cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=128, tie_word_embeddings=False, **({"head_dim": 16} if name == "gemma" else {}))
        hf = model_cls(config).eval()
        with torch.no_grad():  # trained-looking norms and biases, so a fusion that drops them shows
            for pname, p in hf.named_parameters():
                if "norm" in pname:
                    p.normal_(0.0 if name == "gemma" else 1.0, 0.2)
                elif pname.endswith("proj.bias"):
                    p.normal_(0.0, 0.5)
        found[name] = (export(lambda hf=hf: (hf.model, hf.lm_head), config, tmp / f"{name}.onnx"), tmp / f"{name}.onnx")
    from transformers import LlavaForConditionalGeneration

    from edgecompile.zoo.registry import model_path

    llava = LlavaForConditionalGeneration.from_pretrained(model_path("shapes-llava")).eval()
    found["shapes-llava"] = (export(lambda: (llava.model.language_model, llava.lm_head), llava.config.text_config, tmp / "shapes-llava.onnx"), tmp / "shapes-llava.onnx")
    return found


def big_int4(tmp: Path, layers: int, hidden: int, block: int):  # noqa: ANN201
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgecompile.backends.common.onnx_quant import insert_matmul_nbits
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import PrecisionRule, RuleMatch, rules_for

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.75), num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                         vocab_size=8192, max_position_embeddings=2048, tie_word_embeddings=False)
    hf = LlamaForCausalLM(config).eval()
    layout = export(lambda: (hf.model, hf.lm_head), config, tmp / "llama_big.onnx")
    del hf
    graph = onnx.load(str(tmp / "llama_big.onnx"))
    lm_head = (PrecisionRule(match=RuleMatch(role="lm_head"), precision="int4", granularity="per_block", block_size=block, why="bench: lm_head INT4"),)
    plan = annotate({"decoder": graph}, rules_for("vlm-default", lm_head, block), "vlm-default")
    return layout, insert_matmul_nbits(graph, plan.for_component("decoder"))


def compare(layout, model: onnx.ModelProto, paths: dict) -> tuple[dict, dict]:  # noqa: ANN001
    row, fused = {}, {}
    for key, fuse in paths.items():
        start = time.perf_counter()
        fused[key], _ = fuse(model)
        ops = Counter(n.op_type for n in fused[key].graph.node)
        row[key] = {"fuse_s": round(time.perf_counter() - start, 2), "ops": {op: ops[op] for op in FUSED_OPS if ops[op]}, "nodes": len(fused[key].graph.node), **parity(layout, model, fused[key])}
    counts = [Counter(n.op_type for n in m.graph.node) for m in fused.values()]
    row["op_count_difference"] = {op: counts[1][op] - counts[0][op] for op in counts[0] | counts[1] if counts[1][op] != counts[0][op]}  # now - before
    return row, fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block", type=int, default=32)
    args = parser.parse_args()

    import contextlib
    import logging

    from edgecompile import progress
    from edgecompile.backends.ort_cpu.decoder_fusion import fuse_decoder

    progress.configure(-1)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    paths = {"before": before_fuse_decoder(), "now": fuse_decoder}
    result: dict = {"config": {k: getattr(args, k) for k in ("layers", "hidden", "prompt", "steps", "rounds", "threads", "block")}, "code_size": code_size(), "decoders": {}}
    with tempfile.TemporaryDirectory(prefix="edgecompile-fusion-") as tmp, contextlib.redirect_stderr(io.StringIO()):
        for name, (layout, path) in tiny_decoders(Path(tmp)).items():
            result["decoders"][f"{name} fp32"], _ = compare(layout, onnx.load(str(path)), paths)
        layout, int4 = big_int4(Path(tmp), args.layers, args.hidden, args.block)
        big = f"llama {args.layers}x{args.hidden} int4"
        result["decoders"][big], fused = compare(layout, int4, paths)
        files = {k: Path(tmp) / f"big_{k}.onnx" for k in fused}
        for k, m in fused.items():
            onnx.save(m, str(files[k]))
        sessions = {k: _session(p, args.threads) for k, p in files.items()}
        rates: dict[str, list[float]] = {k: [] for k in sessions}
        for _ in range(args.rounds):  # interleaved: machine load drifts hit both paths alike
            for k, s in sessions.items():
                rates[k].append(decode_rate(s, layout, args.prompt, args.steps))
    speed = {f"{k}_tokens_per_s": {"median": round(statistics.median(v), 2), "best": round(max(v), 2)} for k, v in rates.items()}
    speed["rounds"] = {k: [round(r, 2) for r in v] for k, v in rates.items()}
    speed["ratio_now_over_before"] = {"median": round(statistics.median(rates["now"]) / statistics.median(rates["before"]), 3), "best": round(max(rates["now"]) / max(rates["before"]), 3),
                                      "per_round_median": round(statistics.median(n / b for n, b in zip(rates["now"], rates["before"], strict=True)), 3)}
    result["decode_speed"] = speed
    print(json.dumps(result))


if __name__ == "__main__":
    main()
