"""Recipe and target validation: strict schema, errors that name file:line:field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompile.config.recipe import load_recipe
from edgecompile.config.target import load_target
from edgecompile.errors import InputError
from recipe_files import REPO, write_recipe


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    resolved = load_recipe(recipe)
    assert resolved.recipe.name == recipe.stem
    assert resolved.target.memory_budget_mb > 0 and resolved.target.latency_budget_ms > 0


@pytest.mark.parametrize("target", sorted((REPO / "targets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_target_validates(target: Path) -> None:
    assert load_target(target).name == target.stem


def test_tier_budgets_follow_seed_002() -> None:
    target = load_target(REPO / "targets" / "x86-cpu.yaml")
    assert (target.tier, target.memory_budget_mb, target.latency_budget_ms) == ("embedded", 4096, 150.0)


def test_unknown_key_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, extra="calibraton_typo: 3\n")
    with pytest.raises(InputError) as err:
        load_recipe(path)
    assert f"{path}:8: calibraton_typo: unknown key" in str(err.value)


def test_nested_wrong_type_names_line_and_dotted_field(tmp_path: Path) -> None:
    path = write_recipe(tmp_path)
    path.write_text(path.read_text().replace("samples: 8", "samples: many"))
    with pytest.raises(InputError) as err:
        load_recipe(path)
    assert f"{path}:4: calibration.samples:" in str(err.value)
    assert "integer" in str(err.value)


def test_bad_choice_lists_expected_values(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, method="median")
    with pytest.raises(InputError) as err:
        load_recipe(path)
    assert f"{path}:4: calibration.method: expected one of 'minmax', 'entropy', 'percentile'" in str(err.value)


def test_unknown_target_points_at_the_target_line(tmp_path: Path) -> None:
    path = write_recipe(tmp_path)
    path.write_text(path.read_text().replace("target: x86-cpu", "target: pdp-11"))
    with pytest.raises(InputError) as err:
        load_recipe(path)
    message = str(err.value)
    assert f"{path}:3: target: unknown target 'pdp-11'" in message and "x86-cpu" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.yaml: file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_gate_needs_exactly_one_bound(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, extra="  - {metric: accuracy.drop}\n")
    with pytest.raises(InputError, match=r"gates\[1\]: .*exactly one of 'min' or 'max'"):
        load_recipe(path)


def test_invalid_rule_regex_is_rejected(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, extra="rules:\n  - {match: {name: 're:(['}, precision: int8}\n")
    with pytest.raises(InputError, match=r"rules\[0\]\.match\.name: .*regular expression"):
        load_recipe(path)


def test_rule_precision_null_means_float(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, extra="rules:\n  - {match: {role: mlp}, precision: null}\n")
    rule = load_recipe(path).recipe.rules[0]
    assert rule.precision is None


def test_not_yaml(tmp_path: Path) -> None:
    path = write_recipe(tmp_path)
    path.write_text("schema_version: 1\nname: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(path)
