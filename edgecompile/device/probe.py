"""Latency and memory of one component on the device, in a fresh process that holds only the runtime.

``python -m edgecompile.device probe --build DIR --component C`` prints one JSON line; the parent
(edgecompile.device.validate) starts one per component, as the host's validation/probe.py does.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def high_water_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def measure(build_dir: Path, component: str) -> dict[str, float]:
    from edgecompile.device.pack import DevicePack
    from edgecompile.device.runtimes import open_runner

    pack = DevicePack.open(build_dir)
    d = pack.description
    feeds = pack.latency_feeds(component)
    baseline = high_water_mb()
    run = open_runner(d["backend"], {component: pack.artifact_path(component)}, d.get("backend_extra", {}))
    for _ in range(d["latency"]["warmup"]):
        run(component, feeds)
    times = []
    for _ in range(d["latency"]["runs"]):
        start = time.perf_counter()
        run(component, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    peak = high_water_mb()
    return {"p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)), "runs": len(times), "peak_rss_mb": peak, "runtime_rss_mb": peak - baseline}


def probe(build_dir: Path, component: str) -> dict[str, float]:
    cmd = [sys.executable, "-m", "edgecompile.device", "probe", "--build", str(build_dir), "--component", component]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"device latency probe for {component} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
