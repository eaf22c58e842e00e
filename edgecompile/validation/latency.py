"""Run the latency/memory probe in a subprocess and parse its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgecompile.models.adapter import Feeds


def probe(backend: str, directory: Path, component: str, file: str, feeds: Feeds, runs: int, warmup: int) -> dict[str, float]:
    """Median/p90 latency at the given feeds and the probe process's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="edgecompile-probe-") as tmp:
        feeds_path = Path(tmp) / "feeds.npz"
        np.savez(feeds_path, **feeds)
        cmd = [sys.executable, "-m", "edgecompile.validation.probe", "--backend", backend, "--dir", str(directory), "--component", component, "--file", file, "--feeds", str(feeds_path), "--runs", str(runs), "--warmup", str(warmup)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"latency probe for {component} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
