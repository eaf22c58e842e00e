"""A second virtualenv with numpy and the device runtimes only (no torch, no transformers).

``.ci/run`` creates it and exports EDGECOMPILE_DEVICE_VENV; otherwise it is created once under
~/.cache/edgecompile/ with the same numpy / onnxruntime / onnxruntime-qnn versions as this
environment (from PyPI). The checkout is put on PYTHONPATH: the code under test is this tree's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-qnn")


def requirements() -> list[str]:
    return [f"{p}=={metadata.version(p)}" for p in PACKAGES]


def device_python() -> Path:
    """The device venv's python, created when missing (skips when it cannot be, unless CI requires it)."""
    given = os.environ.get("EDGECOMPILE_DEVICE_VENV")
    venv = Path(given) if given else Path.home() / ".cache" / "edgecompile" / ("device-venv-" + "-".join(r.replace("==", "") for r in requirements()))
    python = venv / "bin" / "python"
    if not (venv / ".complete").is_file():
        venv.parent.mkdir(parents=True, exist_ok=True)
        steps = [[sys.executable, "-m", "venv", "--clear", str(venv)], [str(python), "-m", "pip", "install", "-q", *requirements()]]
        for cmd in steps:
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
            if done.returncode != 0:
                message = f"cannot create the torch-free device venv ({' '.join(cmd[:4])}...): {done.stderr.strip()[-500:]}"
                if os.environ.get("EDGECOMPILE_REQUIRE_DEVICE_VENV"):
                    pytest.fail(message)
                pytest.skip(message)
        (venv / ".complete").write_text("\n".join(requirements()))
    return python


def run_device(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(python), *args], capture_output=True, text=True, check=False, env=env, cwd=cwd, timeout=600)
