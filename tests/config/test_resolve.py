"""One resolver for recipe, target and calibration-set names: a path, the project beside the file, the current directory, the shipped ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompile.config.resolve import SHIPPED_ROOT, known, resolve
from edgecompile.errors import InputError


def _target(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text((SHIPPED_ROOT / "targets" / "x86-cpu.yaml").read_text().replace("name: x86-cpu", f"name: {name}"))
    return path


def test_a_path_is_used_as_is_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    path = _target(tmp_path / "anywhere", "mine")
    assert resolve("target", str(path)) == path
    with pytest.raises(InputError, match="not found"):
        resolve("target", str(tmp_path / "nope.yaml"))


def test_lookup_order_project_then_cwd_then_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "project" / "recipes" / "r.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text("")
    monkeypatch.chdir(tmp_path)
    assert resolve("target", "x86-cpu", near=recipe) == SHIPPED_ROOT / "targets" / "x86-cpu.yaml"
    in_cwd = _target(tmp_path / "targets", "x86-cpu")
    assert resolve("target", "x86-cpu", near=recipe) == in_cwd.resolve()
    in_project = _target(tmp_path / "project" / "targets", "x86-cpu")
    assert resolve("target", "x86-cpu", near=recipe) == in_project.resolve()
    assert known("target", near=recipe)["x86-cpu"] == in_project.resolve()
    assert "jetson-orin-nano" in known("target", near=recipe)  # shipped names stay visible


def test_unknown_name_lists_what_exists_and_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"unknown calibration set 'nope'; expected one of .*balanced.*looked in"):
        resolve("calibration_set", "nope")
    assert resolve("recipe", "x86-cpu") == SHIPPED_ROOT / "recipes" / "x86-cpu.yaml"
