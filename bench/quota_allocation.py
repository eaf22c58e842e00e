"""Seed 003's offline half on a bundled generative VLM: per-layer low-bit sensitivity and QUOTA's keep schedules.

For the decoder of ``--model`` the per-layer sensitivity (eq. 1) is measured on ``--calib-samples``
of ``--calib-set`` in both readings (``isolated``: each layer low-bit on its float input;
``cumulative``: a whole low-bit forward), under W``--weight-bits`` and, with ``--act-bits``, A-bit
activations (torch fake quantization, ``edgecompile.pruning.sensitivity``). Then, for each final
keep ratio of seed 003's Table 2 (50/40/30/20/10 %), QUOTA's schedule over ``--candidates``
(eqs. 2-4, ``edgecompile.pruning.allocation``) and the uniform stage-wise schedule, with each
layer's token budget k_l = ceil(rho_l * N_v) for the model's image-token count.

This is the allocation only; ``bench/quota_pruning.py`` executes the schedules in the compiled
decoder (retention, prefill latency, KV memory) and ``bench/quota_prefill.py`` times the prefill at a
real decoder width.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/quota_allocation.py --model edgecompile/zoo/models/shapes-llava-next

Last line: JSON ``{"model", "image_tokens", "sensitivity": {...}, "schedules": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgecompile.data.sources import calibration_samples
from edgecompile.models.registry import adapter_for
from edgecompile.pruning.allocation import allocate_keep_schedule, uniform_keep_schedule
from edgecompile.pruning.sensitivity import decoder_sensitivity

KEEP_RATIOS = (0.5, 0.4, 0.3, 0.2, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("edgecompile/zoo/models/shapes-llava-next"))
    parser.add_argument("--calib-set", default="balanced")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--weight-bits", type=int, default=4)
    parser.add_argument("--act-bits", type=int, default=4)
    parser.add_argument("--candidates", default="2,3,4,5,6", help="decoder layers after which tokens are pruned, ascending")
    parser.add_argument("--floor", type=float, default=0.05)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--mode", choices=("isolated", "cumulative"), default="isolated", help="the sensitivity reading the schedules use")
    args = parser.parse_args()

    adapter = adapter_for(args.model)
    loaded = adapter.load(args.model)
    candidates = [int(x) for x in args.candidates.split(",")]
    image_tokens = adapter.image_tokens(loaded)
    sensitivity = {}
    for mode in ("isolated", "cumulative"):
        start = time.perf_counter()
        values, used = decoder_sensitivity(adapter, loaded, calibration_samples(args.calib_set, args.calib_samples), weight_bits=args.weight_bits, act_bits=args.act_bits, mode=mode)
        sensitivity[mode] = {"per_layer": [round(float(v), 5) for v in values], "samples": used, "seconds": round(time.perf_counter() - start, 2)}
        print(f"{mode:10s} " + " ".join(f"{v:.4f}" for v in values), flush=True)
    chosen = [sensitivity[args.mode]["per_layer"][layer] for layer in candidates]
    schedules = []
    for keep in KEEP_RATIOS:
        for method, schedule in (
            ("quota", allocate_keep_schedule(chosen, candidates, keep, min(args.floor, keep), args.temperature, image_tokens)),
            ("uniform", uniform_keep_schedule(candidates, keep, image_tokens)),
        ):
            row = {"final_keep": keep, "method": method, "layers": list(schedule.layers), "keep_ratios": [round(r, 4) for r in schedule.keep_ratios], "budgets": list(schedule.budgets())}
            schedules.append(row)
            print(f"keep {keep:.0%} {method:8s} rho " + " ".join(f"{r:.3f}" for r in schedule.keep_ratios) + "  k " + " ".join(map(str, row["budgets"])), flush=True)
    print(json.dumps({"model": str(args.model), "image_tokens": image_tokens, "weight_bits": args.weight_bits, "act_bits": args.act_bits, "mode": args.mode, "sensitivity": sensitivity, "schedules": schedules}))


if __name__ == "__main__":
    main()
