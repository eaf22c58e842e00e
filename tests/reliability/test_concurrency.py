"""Two processes, one build directory: a lock per directory, refusal with the holder's pid (exit 3)
or a bounded wait (``EDGECOMPILE_LOCK_WAIT``), and manifest updates that lose nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from battery import PYTHON, assert_refused, cli, snapshot

HOLD = """
import sys
from pathlib import Path
from edgecompile.builddir import lock
lock.hold(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
"""


def _holder(build_dir: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([PYTHON, "-c", HOLD, str(build_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def _let_go(child: subprocess.Popen[str]) -> None:
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.wait(timeout=60) == 0


def test_a_second_build_into_a_locked_directory_is_refused_naming_the_holder(build_copy: Path) -> None:
    child = _holder(build_copy)
    try:
        before = snapshot(build_copy)
        outcome = cli("calibrate", "--build", str(build_copy), "--force")
        assert_refused(outcome, 3, str(build_copy), f"another edgecompile process (pid {child.pid}) is building into this directory", "EDGECOMPILE_LOCK_WAIT")
        assert snapshot(build_copy) == before
    finally:
        _let_go(child)
    assert not (build_copy / ".lock").exists()  # the holder removed its lock file
    assert cli("annotate", "--build", str(build_copy)).exit_code == 0


def test_a_new_build_into_a_locked_directory_is_refused_too(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    child = _holder(out)
    try:
        outcome = cli("export", "--recipe", "x86-cpu", "--out", str(out))
        assert_refused(outcome, 3, str(out), f"pid {child.pid}")
        assert snapshot(out) == {}
    finally:
        _let_go(child)


def test_waiting_for_the_lock(build_copy: Path) -> None:
    """With EDGECOMPILE_LOCK_WAIT the second command waits for the first to finish, then runs."""
    code = HOLD.replace('sys.stdin.readline()', 'import time; time.sleep(1.0)')
    child = subprocess.Popen([PYTHON, "-c", code, str(build_copy)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        outcome = cli("annotate", "--build", str(build_copy), env={"EDGECOMPILE_LOCK_WAIT": "60"})
        assert outcome.exit_code == 0, outcome.output
        assert child.poll() == 0  # it had finished when the lock came free
    finally:
        child.kill()
        child.wait()


UPDATES = """
import sys
from pathlib import Path
from edgecompile.builddir.manifest import update
for i in range(int(sys.argv[3])):
    update(Path(sys.argv[1]), lambda m, i=i: m.notices.__setitem__(f"{sys.argv[2]}{i}", "x"))
"""


def test_concurrent_manifest_updates_lose_nothing(tmp_path: Path) -> None:
    """Two processes each add 30 notices through manifest.update: all 60 are there."""
    env = {**os.environ, "EDGECOMPILE_LOCK_WAIT": "120"}
    children = [subprocess.Popen([PYTHON, "-c", UPDATES, str(tmp_path), tag, "30"], env=env) for tag in ("a", "b")]
    assert [c.wait(timeout=120) for c in children] == [0, 0]
    notices = json.loads((tmp_path / "manifest.json").read_text())["notices"]
    assert sorted(notices) == sorted(f"{t}{i}" for t in "ab" for i in range(30))
    assert not list(tmp_path.glob(".*tmp-*")) and not (tmp_path / ".lock").exists()


def test_two_real_builds_race_into_one_directory(build_copy: Path) -> None:
    """Two `annotate --force` processes at once: each either ran or was refused with the other's pid; the build is whole."""
    exe = str(Path(sys.executable).parent / "edgecompile")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([exe, "annotate", "--build", str(build_copy), "--force"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for _ in range(2)]
    results = [(c.wait(timeout=300), c.stdout.read()) for c in children]
    assert all(code in (0, 3) for code, _ in results), results
    assert any(code == 0 for code, _ in results), results
    for (code, output), other in zip(results, reversed(children), strict=True):
        if code == 3:
            assert f"pid {other.pid}" in output and "Traceback" not in output, output
    assert not list(build_copy.glob(".*.partial-*")) and not (build_copy / ".lock").exists()
    manifest = json.loads((build_copy / "manifest.json").read_text())
    assert set(manifest["stages"]) >= {"export", "annotate", "transform", "calibrate", "build", "validate"}
    assert (build_copy / "annotate" / "plan.json").is_file()


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    from edgecompile.builddir import lock

    lock.hold(tmp_path)
    lock.hold(tmp_path)
    assert lock.holds(tmp_path) and (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    lock.release(tmp_path)
    assert not lock.holds(tmp_path) and not (tmp_path / ".lock").exists()
