"""Latency and memory of one component, measured in a fresh process.

A separate process gives an honest peak-memory figure: the validating process also holds torch,
the reference model and the eval set, none of which the device will. Run as
``python -m edgecompile.validation.probe --backend B --dir D --component C --file F --feeds X.npz``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def high_water_mb() -> float:
    """Peak resident memory of this process image (VmHWM).

    Not ru_maxrss: Linux carries that across fork+exec, so a child would report its parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(run, component: str, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> dict[str, float]:  # noqa: ANN001
    for _ in range(warmup):
        run(component, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(component, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)), "mean_ms": float(np.mean(times)), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--component", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--feeds", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    from edgecompile.backends.base import Artifact
    from edgecompile.backends.registry import get_backend

    with np.load(args.feeds, allow_pickle=False) as data:
        feeds = {k: data[k] for k in data.files}
    baseline_mb = high_water_mb()
    if (args.dir / "artifact.json").is_file():  # the build's own record: backend extras (engines, formats) included
        saved = Artifact.load(args.dir)
        artifact = Artifact(saved.backend, {args.component: args.file}, True, saved.where, saved.notes, saved.extra)
    else:  # the float reference in export/
        artifact = Artifact(args.backend, {args.component: args.file}, True, "probe")
    run = get_backend(args.backend).runner(args.dir, artifact)
    result = measure(run, args.component, feeds, args.runs, args.warmup)
    peak_mb = high_water_mb()
    result["peak_rss_mb"] = peak_mb
    result["runtime_rss_mb"] = peak_mb - baseline_mb
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
