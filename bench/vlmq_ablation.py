"""Seed 001's Tables 5–6 on a bundled generative VLM: RTN, GPTQ, GPTQ + naive image down-weighting, GPTQ + constant G, VLMQ.

For each weight bit width (INT4, INT2) the decoder's INT4-planned linears (``vlm-default`` plan,
block ``--block``) are rounded by each method, the rounded weights are written back into the float
ONNX decoder (weight-only: activations stay float, so only the weight rounding differs between
rows), and the model answers ``--eval-samples`` questions of the bundled VQA eval set greedily on
ONNX Runtime CPU. Printed per row: VQA exact match, token agreement with the float model's tokens,
the first answer token's logits drift (mean cosine, mean KL from the float model), and for the
gradient row the mean-G ratio image/text tokens (mean over layers and projections).

Rows: ``rtn`` (onnxruntime-style symmetric round-to-nearest: ``lowbit_probe.round_symmetric``),
``gptq-ort`` (INT4 only: the ``gptq`` transform, onnxruntime's ``gptq_quantize``, which in 1.32
ignores its Hessian and is round-to-nearest on GPTQ's grid), ``gptq`` (the reference GPTQ loop,
``transforms.vlmq_gptq``, with G ≡ 1: this is also seed 001's "constant G, Diag(1)" row, as a
constant G is a global scale of H and GPTQ's damping is relative), ``gptq+downweight``
(VLMQ_naive: G = ``--dw`` on a ``--li`` share of image tokens, 1 elsewhere), ``vlmq`` (gradient
G, ``--norm``, ``--perturb``). Calibration: ``--calib-samples`` of ``--calib-set``.

    OMP_NUM_THREADS=2 PYTHONPATH=. python bench/vlmq_ablation.py --model edgecompile/zoo/models/shapes-llava [--bits 4 2] [--eval-samples 300]

Last line: JSON ``{"model", "rows": [{"bits", "method", "vqa_exact_match", "token_agreement", ...}], "float": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _export(adapter, loaded, work: Path) -> dict[str, str]:  # noqa: ANN001
    from edgecompile.models.export import export_component

    files = {}
    for spec in adapter.components(loaded):
        path = work / f"{spec.name}.onnx"
        if not path.exists():
            export_component(spec, path, 21)
        files[spec.name] = path.name
    return files


def _rtn(model: onnx.ModelProto, entries, bits: int) -> onnx.ModelProto:  # noqa: ANN001
    from edgecompile.transforms.lowbit_probe import round_symmetric

    inits = {i.name: i for i in model.graph.initializer}
    for e in entries:
        w = numpy_helper.to_array(inits[e.weight])
        inits[e.weight].CopyFrom(numpy_helper.from_array(round_symmetric(w, bits, e.block_size), e.weight))
    return model


def _logit_drift(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """First answer token's logits vs the float model's: mean cosine and mean KL(float ‖ quantized) in nats.

    More sensitive than exact match on a small model whose answers survive every rounding.
    """
    r, g = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
    cos = (r * g).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1))
    lp = lambda z: z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))  # noqa: E731
    kl = (np.exp(lp(r)) * (lp(r) - lp(g))).sum(1)
    return {"first_logits_cosine": float(cos.mean()), "first_logits_kl": float(kl.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2], choices=[2, 4])
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--calib-set", default="balanced")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=300)
    parser.add_argument("--dw", type=float, default=0.05, help="gptq+downweight: G on the down-weighted image tokens (seed's DW factor)")
    parser.add_argument("--li", type=float, default=1.0, help="gptq+downweight: share of image tokens down-weighted (seed's LI ratio)")
    parser.add_argument("--norm", default="l1", choices=["l1", "l2"])
    parser.add_argument("--perturb", default="inputs", choices=["inputs", "inputs_and_block"])
    parser.add_argument("--methods", nargs="+", default=["rtn", "gptq-ort", "gptq", "gptq+downweight", "vlmq"])
    parser.add_argument("--work", type=Path, default=None, help="keep the exported graphs here (default: a temporary folder)")
    args = parser.parse_args()

    from edgecompile.data.eval_sets import vqa_eval_set
    from edgecompile.data.sources import calibration_samples
    from edgecompile.models.export import save_onnx
    from edgecompile.models.registry import adapter_for
    from edgecompile.plan.plan import annotate
    from edgecompile.plan.rules import rules_for
    from edgecompile.runtime.onnx_cpu import cpu_runner
    from edgecompile.transforms.gptq import TRANSFORM as GPTQ
    from edgecompile.transforms.vlmq import TRANSFORM as VLMQ
    from edgecompile.transforms.vlmq import TorchSide, VlmqSettings

    work = args.work or Path(tempfile.mkdtemp(prefix="vlmq-ablation-"))
    work.mkdir(parents=True, exist_ok=True)
    adapter = adapter_for(args.model)
    loaded = adapter.load(args.model)
    t0 = time.perf_counter()
    files = _export(adapter, loaded, work)
    export_s = time.perf_counter() - t0
    float_decoder = onnx.load(str(work / files["decoder"]))
    plan = annotate({"decoder": float_decoder}, rules_for("vlm-default", (), args.block), "vlm-default", getattr(adapter, "role_patterns", ()))
    entries = [e for e in plan.entries if e.component == "decoder"]
    int4 = [e for e in entries if e.precision == "int4" and e.op_type == "MatMul"]
    samples = lambda: calibration_samples(args.calib_set, args.calib_samples)  # noqa: E731
    feeds = lambda: adapter.calibration_feeds(loaded, samples(), "decoder")  # noqa: E731
    side = TorchSide(adapter, loaded, samples)
    eval_set = vqa_eval_set(args.eval_samples)

    def evaluate(decoder: onnx.ModelProto | None, tag: str) -> tuple[dict, dict]:
        names = dict(files)
        if decoder is not None:
            save_onnx(decoder, work / f"decoder-{tag}.onnx")
            names["decoder"] = f"decoder-{tag}.onnx"
        return adapter.evaluate(loaded, cpu_runner(work, names), eval_set)

    t0 = time.perf_counter()
    ref_metrics, ref_outputs = evaluate(None, "float")
    result = {"model": str(args.model), "block": args.block, "calibration": f"{args.calib_set}/{args.calib_samples}", "eval_samples": args.eval_samples, "export_s": round(export_s, 1),
              "float": {"vqa_exact_match": ref_metrics.get("accuracy"), "eval_s": round(time.perf_counter() - t0, 1)}, "weights": "weight-only: rounded weights in the float ONNX decoder, activations float", "rows": []}
    print(json.dumps({"float": result["float"]}), flush=True)
    for bits in args.bits:
        for method in args.methods:
            model = onnx.ModelProto()
            model.CopyFrom(float_decoder)
            t0 = time.perf_counter()
            extra: dict = {}
            if method == "rtn":
                model = _rtn(model, int4, bits)
            elif method == "gptq-ort":
                if bits != 4:
                    continue  # gptq_quantize packs 4 bits only
                model = GPTQ.apply(model, "decoder", entries, feeds).model
            else:
                kind = {"gptq": "constant", "gptq+downweight": "image_downweight", "vlmq": "gradient"}[method]
                settings = VlmqSettings(importance=kind, bits=bits, norm=args.norm, perturb=args.perturb, image_weight=args.dw, image_fraction=args.li)
                outcome = VLMQ.bind(side, settings).apply(model, "decoder", entries, feeds)
                model = outcome.model
                if kind == "gradient":
                    summary = outcome.files["vlmq_importance.json"]
                    extra = {"mean_g_ratio_image_text": summary["ratio_image_text"], "per_layer_ratio": [r["ratio"] for r in summary["layers"]], "fallbacks": summary["fallbacks"]}
                    (work / f"vlmq_importance-int{bits}.json").write_text(json.dumps(summary, indent=1))
            quant_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics, outputs = evaluate(model, f"{method}-{bits}")
            agreement = adapter.compare_outputs(ref_outputs, outputs)
            drift = _logit_drift(ref_outputs["decoder/first_token_logits"], outputs["decoder/first_token_logits"])
            row = {"bits": bits, "method": method, "vqa_exact_match": metrics.get("accuracy"), "token_agreement": agreement.get("generation.token_agreement"),
                   "first_token_agreement": agreement.get("generation.first_token_agreement"), **drift, "quantize_s": round(quant_s, 1), "eval_s": round(time.perf_counter() - t0, 1), **extra}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
