"""On-device validation in a virtualenv without torch or transformers, on real builds of the bundled CLIP.

The build directory is copied elsewhere first (the device gets a copy; only relative paths may
matter), then ``python -m edgecompile.device validate --build COPY`` runs in the second venv.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device.device_venv import device_python, run_device
from device.shapes_builds import shapes_build


@pytest.fixture(scope="module")
def python() -> Path:
    return device_python()


def _copy(build: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "on-device" / "build"
    shutil.copytree(build, dest, symlinks=False)
    return dest


def _gates(report: dict) -> dict[str, dict]:
    return {g["name"]: g for g in report["gates"]}


def test_the_device_venv_has_neither_torch_nor_transformers(python: Path) -> None:
    for module in ("torch", "transformers", "pydantic"):
        done = run_device(python, "-c", f"import {module}")
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    done = run_device(python, "-c", "import onnxruntime, numpy; print(onnxruntime.__version__)")
    assert done.returncode == 0, done.stderr


def test_x86_cpu_build_is_revalidated_on_the_device_with_the_hosts_numbers(python: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    host_build = shapes_build(tmp_path_factory, "x86-cpu")
    host = json.loads((host_build / "validate" / "report.json").read_text())
    assert host["verdict"] == "pass"
    build = _copy(host_build, tmp_path)
    done = run_device(python, "-m", "edgecompile.device", "validate", "--build", str(build))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("PASSED | x86-cpu |")
    device = json.loads((build / "device" / "result.json").read_text())
    # Same graphs, same inputs, same runtime: the device's accuracy and drift are the host's.
    assert device["metrics"]["accuracy"] == pytest.approx(host["metrics"]["accuracy"], abs=1e-9)
    for key in ("drift.vision_encoder.image_embeds.cosine_mean", "drift.text_encoder.text_embeds.cosine_mean"):
        assert device["metrics"][key] == pytest.approx(host["metrics"][key], abs=1e-6)
    assert device["samples"] > 0 and device["where"]["context"] == "native"
    merged = json.loads((build / "report.json").read_text())
    gates = _gates(merged)
    assert gates["latency budget"]["measured_on"].startswith("device") and gates["latency budget"]["status"] == "passed"
    assert gates["compression"]["measured_on"].startswith("host")
    assert merged["device"]["metrics"]["memory.peak_mb"] > 0


def test_snapdragon_build_on_the_qnn_emulator_keeps_its_budgets_pending(python: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    host_build = shapes_build(tmp_path_factory, "snapdragon-8-gen-3")
    host = json.loads((host_build / "validate" / "report.json").read_text())
    assert host["verdict"] == "pending"
    assert {g["name"] for g in host["gates"] if g["status"] == "pending"} == {"latency budget", "memory budget"}
    build = _copy(host_build, tmp_path)
    done = run_device(python, "-m", "edgecompile.device", "validate", "--build", str(build))
    assert done.returncode == 6, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("PENDING | snapdragon-8-gen-3 | 3 passed, 2 pending on device: latency budget, memory budget"), last
    device = json.loads((build / "device" / "result.json").read_text())
    assert device["where"]["context"] == "emulator"
    # The emulator reproduces the NPU's arithmetic: accuracy decided on the device, equal to the host's emulator run.
    assert device["metrics"]["accuracy"] == pytest.approx(host["metrics"]["accuracy"], abs=1e-9)
    gates = _gates(json.loads((build / "report.json").read_text()))
    assert gates["accuracy drop"]["status"] == "passed" and gates["accuracy drop"]["measured_on"].startswith("device (emulator")
    assert gates["latency budget"]["status"] == "pending" and "HTP emulator" in gates["latency budget"]["reason"]


def test_the_qnn_repeat_line_runs_in_the_build_directory(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The printed QNN line (Polygraphy's comparator on the QNN plugin EP) passes, run from the build directory."""
    import subprocess
    import sys

    build = shapes_build(tmp_path_factory, "snapdragon-8-gen-3")
    commands = json.loads((build / "validate" / "comparison.json").read_text())["commands"]
    line = commands["text_encoder"]
    assert line == "python -m edgecompile.device compare --build . --component text_encoder"
    done = subprocess.run([sys.executable, *line.split()[1:]], cwd=build, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0 and "PASSED | compare text_encoder" in done.stdout, done.stdout + done.stderr


def test_llava_generates_on_the_device_with_the_hosts_tokens(python: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Generative pack: the device runs the same greedy loop (edgecompile.runtime.generate) and gates TTFT and decode rate itself."""
    host_build = shapes_build(tmp_path_factory, "x86-cpu", "shapes-llava")
    host = json.loads((host_build / "validate" / "report.json").read_text())
    build = _copy(host_build, tmp_path)
    done = run_device(python, "-m", "edgecompile.device", "validate", "--build", str(build))
    merged = json.loads((build / "report.json").read_text())
    # 24 eval prompts: one wrong answer is a 0.042 drop, over the shipped 0.02 gate; the device keeps the host's accuracy verdict.
    assert merged["verdict"] == host["verdict"] and done.returncode == {"pass": 0, "fail": 1, "pending": 6}[host["verdict"]], done.stdout + done.stderr
    device = json.loads((build / "device" / "result.json").read_text())
    assert device["metrics"]["generation.token_agreement"] == pytest.approx(host["metrics"]["generation.token_agreement"], abs=1e-9)
    assert device["metrics"]["generation.decode_tokens_per_s"] > 0 and device["metrics"]["generation.ttft_ms"] > 0
    gates = _gates(merged)
    assert gates["time to first token budget"]["measured_on"].startswith("device") and gates["time to first token budget"]["status"] == "passed"
    assert gates["accuracy drop"]["measured_on"].startswith("host")  # answer matching needs the tokenizer: the host's number stands
