"""A grid whose points are not valid recipes is refused before the sweep writes anything, with the
grid file, the axis line and the recipe field named (no raw pydantic dump)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompile.cli.main import main

CASES = {
    "unknown field": ("axes:\n  precision_preset: [fp16]\n  bogus.field: [1]\n", ":3: axes.bogus.field", "unknown key"),
    "bool for an int": ("axes:\n  precision_preset: [fp16]\n  calibration.samples: [true, 8]\n", ":3: axes.calibration.samples", "calibration.samples"),
    "string for an int": ("axes:\n  calibration.samples: ['8']\n", ":2: axes.calibration.samples", "valid integer"),
    "unknown preset": ("axes:\n  precision_preset: [fp16, int3-magic]\n", ":2: axes.precision_preset", "precision_preset"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_grid_point_is_named_and_writes_nothing(case: str, tmp_path: Path) -> None:
    text, where, what = CASES[case]
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", "--recipe", "x86-cpu", "--grid", str(grid), "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert f"{grid}{where}" in result.output and what in result.output, result.output
    assert "pydantic" not in result.output
    assert not out.exists()
