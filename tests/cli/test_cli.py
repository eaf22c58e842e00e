"""The CLI in-process with CliRunner: help for every command, exit codes, the verdict line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompile.stages.context import recorded_recipe
from click.testing import CliRunner

from edgecompile.cli.main import main

COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_for_every_command(command: str | None) -> None:
    result = CliRunner().invoke(main, ([command] if command else []) + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_listing_commands_run() -> None:
    runner = CliRunner()
    targets = runner.invoke(main, ["targets"])
    assert targets.exit_code == 0 and "x86-cpu" in targets.output and "150ms" in targets.output
    recipes = runner.invoke(main, ["recipes"])
    assert recipes.exit_code == 0 and "arm64-cpu" in recipes.output and "INVALID" not in recipes.output
    backends = runner.invoke(main, ["backends"])
    assert backends.exit_code == 0 and "ort-cpu" in backends.output


def _set_gate(build_dir: Path, minimum: float) -> None:
    recipe = recorded_recipe(build_dir)
    text = recipe.read_text()
    start = text.index("min: ") + len("min: ")
    end = text.index("}", start)
    recipe.write_text(text[:start] + str(minimum) + text[end:])


def test_gate_that_passes_exits_0(build_copy: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--build", str(build_copy)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("PASSED | tiny |")
    assert "skipped (inputs unchanged)" in result.output


def test_gate_that_fails_exits_1_and_names_the_gate(build_copy: Path) -> None:
    _set_gate(build_copy, 0.99999)  # the tiny random model cannot keep cosine 0.99999 in INT8
    result = CliRunner().invoke(main, ["validate", "--build", str(build_copy)])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("FAILED | tiny | 1 of") and "image drift" in last
    report = json.loads((build_copy / "report.json").read_text())
    assert report["verdict"] == "fail"
    failed = [g for g in report["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["image drift"] and failed[0]["value"] < 0.99999


def test_gate_on_a_missing_metric_fails(build_copy: Path) -> None:
    recipe = recorded_recipe(build_copy)
    recipe.write_text(recipe.read_text() + "  - {metric: accuracy.drop, max: 0.05}\n")
    result = CliRunner().invoke(main, ["validate", "--build", str(build_copy)])
    assert result.exit_code == 1
    assert "metric could not be computed" in result.output


def test_bad_recipe_exits_3_with_file_line_field(tmp_path: Path, tiny_clip: Path) -> None:
    from recipe_files import write_recipe

    recipe = write_recipe(tmp_path, extra="typo_key: 1\n")
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", str(tiny_clip), "--out", str(tmp_path / "b")])
    assert result.exit_code == 3
    assert f"{recipe}:8: typo_key: unknown key" in result.output
    assert "Traceback" not in result.output


def test_missing_model_exits_3(tmp_path: Path) -> None:
    from recipe_files import write_recipe

    result = CliRunner().invoke(main, ["export", "--recipe", str(write_recipe(tmp_path)), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 3
    assert "never downloads" in result.output


def test_build_dir_that_is_not_one_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", "--build", str(tmp_path)])
    assert result.exit_code == 3 and "not an edgecompile build directory" in result.output


def test_unavailable_backend_exits_4(build_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend that reports it cannot build here stops the build with exit 4 and its reason."""
    from edgecompile.backends.base import Availability
    from edgecompile.backends.ort_cpu.backend import OrtCpuBackend

    monkeypatch.setattr(OrtCpuBackend, "availability", lambda self: Availability(False, False, "no CPU execution provider in this onnxruntime"))
    result = CliRunner().invoke(main, ["build", "--build", str(build_copy), "--force"])
    assert result.exit_code == 4, result.output
    assert "cannot build on this machine: no CPU execution provider" in result.output
    assert (build_copy / "build" / "vision_encoder.onnx").is_file()  # the previous artifact is untouched
