"""The saved Polygraphy reference round-trips, the comparison uses the recipe's thresholds, and the
printed `polygraphy run` command repeats the comparison from the saved files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecompile.backends.base import Artifact
from edgecompile.backends.ort_cpu.backend import OrtCpuBackend
from edgecompile.config.recipe import Comparison, OutputTolerance
from edgecompile.validation.polygraphy_compare import (
    ReferenceRecorder,
    compare_with_reference,
    comparison_gates,
    load_reference,
)


def _candidate(built: Path):  # noqa: ANN202
    artifact = Artifact.load(built / "build")
    return OrtCpuBackend().runner(built / "build", artifact), {c: built / "build" / f for c, f in artifact.components.items()}


def test_reference_saved_in_polygraphy_formats(built: Path) -> None:
    ref = built / "validate" / "reference"
    feeds, results = load_reference(ref, "vision_encoder")
    assert len(feeds) >= 1 and "pixel_values" in feeds[0]
    (name, iterations), = results.items()
    assert name == "fp32-reference" and len(iterations) == len(feeds)
    # the saved outputs are the float graph's outputs on the saved feeds
    reference = OrtCpuBackend().runner(built / "export", Artifact("ort-cpu", {"vision_encoder": "vision_encoder.onnx"}, True, "r"))
    again = reference("vision_encoder", feeds[0])["image_embeds"]
    np.testing.assert_allclose(np.asarray(iterations[0]["image_embeds"]), again, rtol=1e-5, atol=1e-6)


def test_recorder_round_trip(tmp_path: Path) -> None:
    recorder = ReferenceRecorder(max_iterations=2)
    run = recorder.wrap(lambda c, f: {"y": f["x"] * 2.0})
    for i in range(3):
        run("comp", {"x": np.full((2, 3), float(i), dtype=np.float32)})
    recorder.save(tmp_path)
    feeds, results = load_reference(tmp_path, "comp")
    assert len(feeds) == 2  # capped at max_iterations
    np.testing.assert_array_equal(np.asarray(results["fp32-reference"][1]["y"]), np.full((2, 3), 2.0, dtype=np.float32))


def test_recorder_leaves_out_calls_over_its_byte_budget(tmp_path: Path) -> None:
    """A prefill-sized call (here 4 KiB against a 3 KiB budget) is skipped and counted; the small calls after it are kept."""
    recorder = ReferenceRecorder(max_iterations=4, max_bytes=3 * 1024)
    run = recorder.wrap(lambda c, f: {"y": f["x"] * 2.0})
    big = run("comp", {"x": np.ones((1, 512), np.float32)})  # 2 KiB in + 2 KiB out
    assert big["y"].shape == (1, 512)  # the caller still gets it
    for i in range(3):
        run("comp", {"x": np.full((1, 64), float(i), np.float32)})  # 512 B per call
    assert recorder.skipped == {"comp": 1} and len(recorder.feeds["comp"]) == 3 and recorder.held["comp"] == 3 * 512
    recorder.save(tmp_path)
    feeds, _ = load_reference(tmp_path, "comp")
    assert [f["x"].shape for f in feeds] == [(1, 64)] * 3
    assert json.loads((tmp_path / "skipped.json").read_text())["calls_over_budget"] == {"comp": 1}


def test_comparison_thresholds_per_output(built: Path, tmp_path: Path) -> None:
    run, files = _candidate(built)
    ref = built / "validate" / "reference"
    loose = Comparison(default=OutputTolerance(atol=10.0, rtol=10.0, min_cosine=0.0))
    strict = Comparison(outputs={"vision_encoder/image_embeds": OutputTolerance(atol=0.0, rtol=0.0, min_cosine=0.999999)}, default=OutputTolerance(atol=10.0, rtol=10.0, min_cosine=0.0))
    ok = compare_with_reference(ref, tmp_path / "loose", run, loose, files)
    bad = compare_with_reference(ref, tmp_path / "strict", run, strict, files)
    row = ok["components"]["vision_encoder"]["image_embeds"]
    assert 0.9 < row["cosine_min"] < 0.999999 and row["max_absdiff"] > 0.0 and row["median_absdiff"] <= row["max_absdiff"]
    assert row["simple_passed"] and row["cosine_passed"]
    strict_row = bad["components"]["vision_encoder"]["image_embeds"]
    assert not strict_row["simple_passed"] and not strict_row["cosine_passed"]
    assert bad["components"]["text_encoder"]["text_embeds"]["simple_passed"]  # default thresholds elsewhere
    assert (tmp_path / "strict" / "vision_encoder.accuracy.json").is_file()
    gates = comparison_gates(bad, strict)
    assert [g.passed for g in gates if "vision_encoder" in g.name] == [False, False]
    # an output that was never compared is a failed gate
    missing = comparison_gates({"components": {}}, strict, {"vision_encoder": ["image_embeds"]})
    assert missing and not any(g.passed for g in missing) and all(g.value is None for g in missing)


def test_polygraphy_command_repeats_comparison(built: Path) -> None:
    summary = json.loads((built / "validate" / "comparison.json").read_text())
    line = summary["commands"]["vision_encoder"]
    assert "--load-outputs" in line and " validate/reference/" in line  # relative: the line runs from the build directory
    exe = shutil.which("polygraphy") or str(Path(sys.executable).parent / "polygraphy")
    if not Path(exe).exists():
        pytest.skip("the polygraphy command-line tool is not on PATH")
    args = line.split()[1:]
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=built)
    # default thresholds (cosine 0.99, median atol 0.01/rtol 0.1) vs what validate recorded
    row = summary["components"]["vision_encoder"]["image_embeds"]
    expected_pass = row["simple_passed"] and row["cosine_passed"]
    assert (done.returncode == 0) == expected_pass, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED" in done.stdout + done.stderr if expected_pass else "FAILED" in done.stdout + done.stderr
