"""CLI conventions: --json (one object on stdout), -v/-q, --version, short options, completion, closed pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompile import __version__
from edgecompile.cli.main import main


def test_version_long_and_short() -> None:
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(main, [flag])
        assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(("command", "key", "expected"), [("targets", "targets", "x86-cpu"), ("recipes", "recipes", "x86-cpu"), ("backends", "backends", "ort-cpu"), ("zoo", "models", "shapes-clip")])
def test_listing_commands_print_one_json_object(command: str, key: str, expected: str) -> None:
    result = CliRunner().invoke(main, [command, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert expected in [row["name"] for row in data[key]]


def test_short_options_and_the_out_alias_are_accepted() -> None:
    for command in ("build", "validate", "export", "calibrate"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert "-r, --recipe" in text and "-m, --model" in text and "-o, --output, --out" in text and "-b, --build" in text and "--json" in text
    assert "-o, --output, --out" in CliRunner().invoke(main, ["report", "--help"]).output
    top = CliRunner().invoke(main, ["--help"]).output
    assert "-v, --verbose" in top and "-q, --quiet" in top


def test_build_json_prints_exactly_one_parseable_object(build_copy: Path) -> None:
    result = CliRunner().invoke(main, ["build", "-b", str(build_copy), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the whole of stdout is one object
    assert data["verdict"] == "pass" and data["exit_code"] == 0 and data["command"] == "build"
    assert [g["name"] for g in data["gates"]] and "drift.vision_encoder.image_embeds.cosine_mean" in data["metrics"]
    assert "PASSED | tiny" in result.stderr and "PASSED" not in result.stdout  # the human lines went to stderr


def test_json_on_bad_input_is_still_one_object_with_the_exit_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "-r", str(tmp_path / "missing.yaml"), "--json"])
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["exit_code"] == 3 and data["error"]


def test_quiet_build_prints_only_the_verdict_line(build_copy: Path) -> None:
    result = CliRunner().invoke(main, ["-q", "validate", "-b", str(build_copy)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("PASSED | tiny |")
    loud = CliRunner().invoke(main, ["build", "-b", str(build_copy)])
    assert "validate  skipped" in loud.stdout and "[ok  ]" in loud.stdout


def test_verdict_line_keeps_the_digits_of_a_cosine(build_copy: Path) -> None:
    out = CliRunner().invoke(main, ["build", "-b", str(build_copy)]).stdout
    line = next(x for x in out.splitlines() if "cosine_mean =" in x)
    assert "cosine_mean = 1 " not in line and "= 0.99" in line


def test_report_json_and_output_alias(build_copy: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(build_copy), "-o", str(tmp_path / "agg"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["builds"] == 1 and data["groups"][0]["task"] == "zero-shot classification"
    assert (tmp_path / "agg" / "report.html").is_file()


def test_shell_completion_script_is_generated() -> None:
    result = CliRunner().invoke(main, [], prog_name="edgecompile", env={"_EDGECOMPILE_COMPLETE": "bash_source"})
    assert result.exit_code == 0 and "_edgecompile_completion" in result.output
    words = CliRunner().invoke(main, [], prog_name="edgecompile", env={"_EDGECOMPILE_COMPLETE": "bash_complete", "COMP_WORDS": "edgecompile bu", "COMP_CWORD": "1"})
    assert "build" in words.output


def test_report_into_a_closed_pipe_exits_0(build_copy: Path, tmp_path: Path) -> None:
    """`edgecompile report DIR | head -1` must exit 0 without a BrokenPipeError traceback."""
    exe = Path(sys.executable).with_name("edgecompile")
    command = f"set -o pipefail; '{exe}' report '{build_copy}' -o '{tmp_path / 'agg'}' | head -1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# edgecompile sweep report") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
