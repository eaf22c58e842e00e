"""Strict YAML for every document the user writes: no duplicate keys, no anchors/aliases, UTF-8 only."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompile.config.recipe import load_recipe
from edgecompile.errors import EdgecompileError
from recipe_files import write_recipe

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"

CASES = {
    "duplicate top-level key": ("calibration: {method: minmax, set: synthetic, samples: 8}\n", "key 'calibration' appears twice"),
    "duplicate nested key": ("backend_options: {x: 1, x: 2}\n", "key 'x' appears twice"),
    "alias bomb in backend_options": ("backend_options:\n  " + BOMB.replace("\n", "\n  ").rstrip() + "\n", "anchors and aliases are not accepted"),
    "anchor on a gate": ("description: &d hello\n", "anchors and aliases are not accepted"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recipe_yaml_strictness(tmp_path: Path, case: str) -> None:
    extra, expected = CASES[case]
    path = write_recipe(tmp_path, extra=extra)
    with pytest.raises(EdgecompileError) as info:
        load_recipe(path)
    message = str(info.value)
    assert expected in message and f"{path}:" in message, message
    assert info.value.exit_code == 3


def test_non_utf8_recipe_is_a_named_error(tmp_path: Path) -> None:
    path = write_recipe(tmp_path)
    path.write_bytes(path.read_bytes() + b"description: caf\xe9\n")
    with pytest.raises(EdgecompileError, match="not UTF-8"):
        load_recipe(path)


@pytest.mark.parametrize("text, expected", [("name: x\nname: y\n", "appears twice"), ("name: &n x\nkind: *n\n", "aliases"), (b"name: \xff\n", "not UTF-8")])
def test_calibration_set_yaml_strictness(tmp_path: Path, text: str | bytes, expected: str) -> None:
    from edgecompile.data.calibration_sets import load_calibration_set

    path = tmp_path / "x.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=expected):
        load_calibration_set(str(path), tmp_path)


@pytest.mark.parametrize("text, expected", [("axes:\n  a: [1]\n  a: [2]\n", "appears twice"), ("axes: &x {a: [1]}\n", "aliases"), ("axes: [1\n", "not valid YAML")])
def test_sweep_grid_yaml_strictness(tmp_path: Path, text: str, expected: str) -> None:
    from edgecompile.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(EdgecompileError, match=expected):
        load_grid(path)


@pytest.mark.parametrize("bound", ["min: .nan", "max: .inf", "min: -.inf"])
def test_non_finite_gate_thresholds_are_refused(tmp_path: Path, bound: str) -> None:
    path = write_recipe(tmp_path, extra=f"  - {{metric: accuracy.drop, {bound}}}\n")
    with pytest.raises(EdgecompileError, match=r"gates\[1\]"):
        load_recipe(path)


def test_reports_are_strict_json(tmp_path: Path) -> None:
    import json

    from edgecompile.builddir.atomic import write_json

    write_json(tmp_path / "r.json", {"metrics": {"a": float("nan"), "b": [1.0, float("inf")], "c": 2.5}})
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"metrics": {"a": None, "b": [1.0, None], "c": 2.5}}
