"""``edgecompile sweep`` reports progress like the build stages: plain periodic lines off a TTY, nothing under -q,
and with --json one object on stdout (point lines and progress on stderr).

One grid of two FP16 points that differ only in calibration size (FP16 reads no ranges, so the
second is merged into the first): the first run builds one point (export reused from the tiny
build), the later runs find every stage current in the same sweep root.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_build import tiny_model, write_recipe

from edgecompile import progress
from edgecompile.cli.main import main as cli

GRID = "axes:\n  precision_preset: [fp16]\n  calibration.samples: [8, 4]\n"


@pytest.fixture(scope="module")
def sweep_args(built: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("sweep-progress")
    (root / "grid.yaml").write_text(GRID)
    recipe = write_recipe(root / "repo", "tiny")
    return ["sweep", "--recipe", str(recipe), "--grid", str(root / "grid.yaml"), "--model", str(tiny_model()), "--out", str(root / "sweep"), "--reuse", str(built)]


def _invoke(args: list[str]):  # noqa: ANN202
    try:
        return CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        progress.configure(0)  # the CLI set the process-wide verbosity; later tests expect the default


def test_plain_progress_lines_off_a_tty(sweep_args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PERIOD_S", 0.0)  # a line at every step, as a long sweep gets every PERIOD_S seconds
    result = _invoke(sweep_args)
    assert result.exit_code == 0, result.output
    points = [line for line in result.stdout.splitlines() if line.startswith("  tiny-fp16-")]
    assert len(points) == 2 and sum(": merged into " in line for line in points) == 1, result.stdout
    assert "sweep (local): 2 points: 1 built" in result.stdout.splitlines()[-1]
    err = result.stderr
    assert "sweep: points finished: 1/2 (50%) after" in err and "sweep: points finished: 2/2 (100%) done in" in err, err
    assert "sweep: build: 2/2 (100%) done in" in err and "sweep: validate: 1/1 (100%) done in" in err, err  # merged after the build (same bytes)
    assert "\x1b[" not in err and "sweep:" not in result.stdout  # no escape codes, progress on stderr only


def test_quiet_prints_the_summary_only(sweep_args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PERIOD_S", 0.0)
    result = _invoke(["-q", *sweep_args])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [next(line for line in result.stdout.splitlines() if line.startswith("sweep (local): 2 points"))]
    assert "sweep:" not in result.stderr and "points finished" not in result.stderr, result.stderr


def test_json_stdout_is_one_object(sweep_args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PERIOD_S", 0.0)
    result = _invoke([*sweep_args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # exactly one JSON document: a second line or stray text would not parse
    assert data["ok"] is True and data["command"] == "sweep" and data["exit_code"] == 0
    assert (data["points"], data["built"], data["merged"], data["failed"]) == (2, 1, 1, 0)
    assert [r["state"] for r in data["rows"]] == ["built", "merged"] and Path(data["sweep_json"]).is_file()
    assert "merged into" in result.stderr and "sweep: points finished: 2/2" in result.stderr  # point lines and progress moved to stderr
