"""Faults: kill -9 mid-stage, Ctrl-C, a tool failing inside a stage, an edited artifact, a closed pipe.

Whatever happens, what was recorded is kept, a stage's half-written output never replaces the
last good one, leftovers are removed only when their process is gone, and the user is told.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from battery import PYTHON, assert_refused, cli, snapshot

CHILD_PARTIAL = """
import os, sys
from pathlib import Path
from edgecompile.builddir.atomic import staged_directory
with staged_directory(Path(sys.argv[1]) / "export") as out:
    (out / "half.onnx").write_bytes(b"half")
    print("ready", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), 9)
    sys.stdin.readline()
"""


def _without_partials(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if ".partial-" not in k}


def test_kill_9_mid_stage_keeps_the_last_good_output_and_its_leftover_goes(tmp_path: Path) -> None:
    from edgecompile.builddir.atomic import remove_partials

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "good.onnx").write_bytes(b"good")
    before = snapshot(tmp_path)
    child = subprocess.run([PYTHON, "-c", CHILD_PARTIAL, str(tmp_path), "kill"], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL
    leftovers = list(tmp_path.glob(".export.partial-*"))
    assert len(leftovers) == 1 and _without_partials(snapshot(tmp_path)) == before
    assert remove_partials(tmp_path) == leftovers  # its pid is dead
    assert snapshot(tmp_path) == before


def test_a_live_process_partial_directory_is_its_own(tmp_path: Path) -> None:
    from edgecompile.builddir.atomic import remove_partials

    child = subprocess.Popen([PYTHON, "-c", CHILD_PARTIAL, str(tmp_path), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        partial = next(tmp_path.glob(".export.partial-*"))
        assert str(child.pid) in partial.name
        assert remove_partials(tmp_path) == [] and partial.is_dir()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    assert (tmp_path / "export" / "half.onnx").read_bytes() == b"half" and not list(tmp_path.glob(".export.*"))


def test_legacy_partial_without_owner_is_stale(tmp_path: Path) -> None:
    from edgecompile.builddir.atomic import remove_partials

    (tmp_path / ".export.partial-ab12cd34").mkdir()
    (tmp_path / ".manifest.json.tmp-ab12cd34").write_text("{")
    assert len(remove_partials(tmp_path)) == 2 and snapshot(tmp_path) == {}


def test_ctrl_c_inside_a_stage_leaves_nothing_half_written(tmp_path: Path) -> None:
    from edgecompile.builddir.atomic import staged_directory

    (tmp_path / "calibrate").mkdir()
    (tmp_path / "calibrate" / "ranges.json").write_text("{}")
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(tmp_path / "calibrate") as out:
            (out / "ranges.json").write_text('{"half')
            raise KeyboardInterrupt
    assert snapshot(tmp_path) == before


def test_failed_json_write_keeps_the_old_file(tmp_path: Path) -> None:
    from edgecompile.builddir.atomic import write_json

    path = tmp_path / "manifest.json"
    path.write_text('{"stages": {}}')

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_json(path, {"x": Boom()})
    assert snapshot(tmp_path) == {"manifest.json": snapshot(path)["manifest.json"]}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_written_as_strict_json(tmp_path: Path, value: float) -> None:
    from edgecompile.builddir.atomic import write_json

    write_json(tmp_path / "report.json", {"metrics": {"m": value}, "list": [1.0, value]})

    def refuse(name: str) -> None:
        raise AssertionError(f"bare {name} in strict JSON")

    assert json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse) == {"metrics": {"m": None}, "list": [1.0, None]}


def test_broken_pipe_is_exit_0() -> None:
    exe = Path(sys.executable).parent / "edgecompile"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"'{exe}' recipes | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "0", result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_a_tool_failing_inside_a_stage_is_exit_5_and_keeps_the_last_output(build_copy: Path) -> None:
    from edgecompile.errors import StageError
    from edgecompile.stages.base import run_stage
    from edgecompile.stages.calibrate import CalibrateStage
    from edgecompile.stages.context import BuildContext

    class Failing(CalibrateStage):
        def run(self, ctx, out, upstream):  # noqa: ANN001, ANN201
            (out / "ranges.json").write_text('{"half')
            raise RuntimeError("the quantizer ran out of memory")

    before = snapshot(build_copy)
    ctx = BuildContext.open(build_copy)
    try:
        with pytest.raises(StageError) as info:
            run_stage(ctx, Failing(), force=True)
    finally:
        ctx.close()
    assert info.value.exit_code == 5 and "the quantizer ran out of memory" in str(info.value) and "calibrate" in str(info.value)
    after = snapshot(build_copy)
    logs = {k for k in after if k.startswith("logs")}
    assert logs and {k: v for k, v in after.items() if k not in logs} == {k: v for k, v in before.items() if not k.startswith("logs")}


def test_kill_9_of_a_real_stage_then_rerun_resumes(build_copy: Path) -> None:
    """kill -9 while `calibrate --force` runs: the recorded build stays; a rerun cleans up and is current."""
    before = snapshot(build_copy)
    exe = Path(sys.executable).parent / "edgecompile"
    child = subprocess.Popen([str(exe), "calibrate", "--build", str(build_copy), "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 90
        while not list(build_copy.glob(".calibrate.partial-*")) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        killed = child.poll() is None
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    if killed:  # caught inside the stage: its partial directory is all that differs
        after = snapshot(build_copy)
        assert {k for k in after if ".partial-" not in k} >= set(before)
        assert after["manifest.json"] == before["manifest.json"]
    outcome = cli("calibrate", "--build", str(build_copy))
    assert outcome.exit_code == 0, outcome.output
    assert not list(build_copy.glob(".*.partial-*"))
    assert "calibrate" in json.loads((build_copy / "manifest.json").read_text())["stages"]


@pytest.mark.parametrize("stage, file", [("calibrate", "calibrate/ranges.json"), ("build", None)])
def test_an_edited_artifact_is_reported_not_silently_rebuilt(build_copy: Path, stage: str, file: str | None) -> None:
    target = build_copy / file if file else sorted((build_copy / "build").rglob("*.onnx"))[0]
    target.write_bytes(target.read_bytes() + b" ")
    command = ["calibrate", "--build", str(build_copy)] if stage == "calibrate" else ["validate", "--build", str(build_copy)]
    outcome = cli(*command)
    assert outcome.exit_code in (0, 1, 6), outcome.output
    assert "notice:" in outcome.output and f"bytes no longer match manifest.json's record of stage '{stage}'" in outcome.output
    assert str(build_copy / stage) in outcome.output
    notices = json.loads((build_copy / "manifest.json").read_text())["notices"]
    assert f"edited:{stage}" in notices and "redoing" in notices[f"edited:{stage}"]


def test_a_stale_lock_of_a_killed_process_does_not_block(build_copy: Path) -> None:
    code = "import sys, os\nfrom pathlib import Path\nfrom edgecompile.builddir import lock\nlock.hold(Path(sys.argv[1]))\nos.kill(os.getpid(), 9)\n"
    child = subprocess.run([PYTHON, "-c", code, str(build_copy)], timeout=60)
    assert child.returncode == -signal.SIGKILL and (build_copy / ".lock").exists()
    outcome = cli("annotate", "--build", str(build_copy))
    assert outcome.exit_code == 0, outcome.output
    assert not (build_copy / ".lock").exists()


def test_refused_wait_setting_is_named(build_copy: Path) -> None:
    code = "import sys\nfrom pathlib import Path\nfrom edgecompile.builddir import lock\nlock.hold(Path(sys.argv[1]))\nprint('ready', flush=True)\nsys.stdin.readline()\n"
    child = subprocess.Popen([PYTHON, "-c", code, str(build_copy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert_refused(cli("annotate", "--build", str(build_copy), env={"EDGECOMPILE_LOCK_WAIT": "soon"}), 3, "$EDGECOMPILE_LOCK_WAIT", "'soon'")
    finally:
        child.kill()
        child.wait()
