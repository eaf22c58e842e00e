"""Shared pieces of the bad-input and fault battery: the CLI in-process, tree snapshots.

Every case asserts three things: the exit code, that the message names the file (and field or
line) at fault, and that nothing outside the build's own partial directory changed (a snapshot of
every file's bytes before and after, lock and partial names aside).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from edgecompile.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SHAPES_CLIP = REPO / "edgecompile" / "zoo" / "models" / "shapes-clip"
PYTHON = sys.executable


@dataclass
class Outcome:
    exit_code: int
    output: str


def cli(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """Run ``edgecompile ARGS`` in-process; stdout and stderr together in ``output``."""
    result = CliRunner().invoke(main, list(args), env=env)
    return Outcome(result.exit_code, result.output + (result.stderr if result.stderr and result.stderr not in result.output else ""))


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its bytes (what 'nothing changed' compares).

    ``.lock`` files are left out: a build directory's lock exists only while a command runs (a copy
    of a directory whose lock is held copies a lock file that no one holds).
    """
    if not root.exists():
        return {}
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.name == ".lock":
            continue
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_refused(outcome: Outcome, code: int, *named: str) -> None:
    """The exit code, and every string in ``named`` (file, line, field) in the message."""
    assert outcome.exit_code == code, outcome.output
    for text in named:
        assert text in outcome.output, f"{text!r} not in:\n{outcome.output}"
    assert "Traceback" not in outcome.output, outcome.output
