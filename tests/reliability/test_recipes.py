"""Bad recipes and targets: every case exit 3 with file:line and the field, refused before export.

Covers strict YAML (duplicate keys, anchors/aliases, non-UTF-8, malformed), strict types (no lax
bool->int or str->number coercion), targets as names only, shadowed rules, unknown calibration and
eval sets named at recipe load, non-finite thresholds, and one parse per file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from battery import REPO, assert_refused, cli, snapshot
from recipe_files import TINY_RECIPE

BASE = TINY_RECIPE.format(name="tiny", method="minmax", min_cosine=0.9)
BOMB = "  a: [x, x, x, x, x, x, x, x]\n  b: &b [x]\n  c: [*b, *b, *b, *b]\n"

# case: (text edit (old, new) or appended text, line, field, words in the message)
CASES: dict[str, tuple[tuple[str, str] | str, int, str, str]] = {
    # lax coercions refused (strict types)
    "samples: true (bool->int)": (("samples: 8}", "samples: true}"), 4, "calibration.samples", "valid integer"),
    "samples: '8' (str->int)": (("samples: 8}", "samples: '8'}"), 4, "calibration.samples", "valid integer"),
    "samples: 8.0 (float->int)": (("samples: 8}", "samples: 8.0}"), 4, "calibration.samples", "valid integer"),
    "latency_runs: yes (YAML 1.1 bool)": (("latency_runs: 5", "latency_runs: yes"), 5, "eval.latency_runs", "valid integer"),
    "gate min: '0.9' (str->float)": (("min: 0.9", "min: '0.9'"), 7, "gates[0].min", "valid number"),
    "budget_gates: 1 (int->bool)": ("budget_gates: 1\n", 8, "budget_gates", "valid boolean"),
    "allow_no_gates: 'true' (str->bool)": ("allow_no_gates: 'true'\n", 8, "allow_no_gates", "valid boolean"),
    "description: 42 (int->str)": ("description: 42\n", 8, "description", "valid string"),
    "opset: true": ("opset: true\n", 8, "opset", "valid integer"),
    "activation_symmetric: 0": ("quantization: {activation_symmetric: 0}\n", 8, "quantization.activation_symmetric", "valid boolean"),
    "int4_block_size: '32'": ("quantization: {int4_block_size: '32'}\n", 8, "quantization.int4_block_size", "expected one of"),
    "schema_version: '1'": (("schema_version: 1", "schema_version: '1'"), 1, "schema_version", "expected one of"),
    # targets are names
    "target: ../ path": (("target: x86-cpu", "target: ../targets/x86-cpu"), 3, "target", "not a path"),
    "target: absolute path": (("target: x86-cpu", "target: /etc/passwd"), 3, "target", "not a path"),
    "target: file name with .yaml": (("target: x86-cpu", "target: x86-cpu.yaml"), 3, "target", "not a path"),
    "target: unknown name": (("target: x86-cpu", "target: no-such-device"), 3, "target", "unknown target 'no-such-device'; expected one of"),
    # non-finite thresholds
    "gate min: .nan": (("min: 0.9", "min: .nan"), 7, "gates[0].min", "finite number"),
    "gate min: .inf": (("min: 0.9", "min: .inf"), 7, "gates[0].min", "finite number"),
    # strict YAML
    "duplicate top-level key": ("calibration: {method: minmax, set: synthetic, samples: 8}\n", 8, "", "key 'calibration' appears twice"),
    "duplicate key in a flow mapping": ("backend_options: {x: 1, x: 2}\n", 8, "", "key 'x' appears twice"),
    "duplicate key inside a gate": (("min: 0.9}", "min: 0.9, min: 0.5}"), 7, "", "key 'min' appears twice"),
    "anchor": ("description: &d hello\n", 8, "", "anchors and aliases are not accepted"),
    "alias bomb in backend_options": ("backend_options:\n" + BOMB, 10, "", "anchors and aliases are not accepted"),
    "merge key": ("quantization: {<<: {weight_type: int8}}\n", 8, "", "merge keys ('<<') are not accepted"),
    "malformed YAML": ("rules: [\n", 9, "", "not valid YAML"),
    # schema
    "unknown key": ("colour: red\n", 8, "colour", "unknown key"),
    "name differs from the file name": (("name: tiny", "name: other"), 2, "name", "expected 'tiny'"),
    "missing schema_version": (("schema_version: 1\n", ""), 1, "schema_version", "required field is missing"),
    "unknown weight transform": ("quantization: {weight_transforms: [nope]}\n", 8, "quantization", "unknown transform"),
    "percentile without method percentile": (("method: minmax,", "method: minmax, percentile: 99.0,"), 4, "calibration", "only used with method: percentile"),
    # names resolved at load, not after export
    "unknown calibration set": (("set: synthetic, samples: 8", "set: no-such-set, samples: 8"), 4, "calibration.set", "unknown calibration set 'no-such-set'"),
    "unknown eval set": (("set: synthetic, samples: 16", "set: no-such-eval, samples: 16"), 5, "eval.set", "no-such-eval"),
    # rules that can never fire
    "rule shadowed by an identical rule": (
        "rules:\n  - {match: {component: vision_encoder}, precision: fp16}\n  - {match: {component: vision_encoder}, precision: int8}\n", 10, "rules[1]", "can never fire: rules[0] (line 9)"),
    "rule shadowed by a catch-all": ("rules:\n  - {precision: null}\n  - {match: {role: mlp}, precision: int8}\n", 10, "rules[1]", "can never fire"),
    "int4 rule shadowed by an int8 rule": (
        "rules:\n  - {match: {role: mlp}, precision: int8}\n  - {match: {role: mlp, component: text_encoder}, precision: int4}\n", 10, "rules[1]", "can never fire"),
}


def _recipe(root: Path, case: str) -> Path:
    edit = CASES[case][0]
    text = BASE + edit if isinstance(edit, str) else BASE.replace(*edit)
    (root / "recipes").mkdir(parents=True)
    shutil.copytree(REPO / "targets", root / "targets")
    path = root / "recipes" / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_recipe_is_refused_with_file_line_field(tmp_path: Path, case: str) -> None:
    _, line, field, words = CASES[case]
    path = _recipe(tmp_path, case)
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    outcome = cli("export", "--recipe", str(path), "--out", str(out))
    assert_refused(outcome, 3, f"{path}:{line}:", field, words)
    assert not out.exists()
    assert snapshot(tmp_path) == before


def test_non_utf8_recipe(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "anchor")
    path.write_bytes(BASE.encode() + b"description: caf\xe9\n")
    outcome = cli("export", "--recipe", str(path), "--out", str(tmp_path / "out"))
    assert_refused(outcome, 3, str(path), "not UTF-8")
    assert not (tmp_path / "out").exists()


def test_utf16_recipe(tmp_path: Path) -> None:
    path = _recipe(tmp_path, "anchor")
    path.write_bytes(BASE.encode("utf-16"))
    assert_refused(cli("export", "--recipe", str(path), "--out", str(tmp_path / "out")), 3, str(path), "not UTF-8")


@pytest.mark.parametrize("text, words", [("", "expected a mapping"), ("- a\n- b\n", "expected a mapping"), ("just text\n", "expected a mapping")])
def test_recipe_that_is_not_a_mapping(tmp_path: Path, text: str, words: str) -> None:
    path = _recipe(tmp_path, "anchor")
    path.write_text(text)
    assert_refused(cli("export", "--recipe", str(path), "--out", str(tmp_path / "out")), 3, f"{path}:1:", words)


@pytest.mark.parametrize("edit, line, field", [
    ("tier: mobile\n", 9, "key 'tier' appears twice"),
    ("memory_budget_mb: true\n", 9, "memory_budget_mb: Input should be a valid integer"),
    ("latency_budget_ms: '150'\n", 9, "latency_budget_ms: Input should be a valid number"),
    (("backend: ort-cpu", "backend: no-such-backend"), 5, "unknown backend 'no-such-backend'"),
])
def test_bad_target_names_the_target_file(tmp_path: Path, edit: tuple[str, str] | str, line: int, field: str) -> None:
    path = _recipe(tmp_path, "anchor")
    path.write_text(BASE)
    target = tmp_path / "targets" / "x86-cpu.yaml"
    text = target.read_text()
    target.write_text(text + edit if isinstance(edit, str) else text.replace(*edit))
    before = snapshot(tmp_path)
    assert_refused(cli("export", "--recipe", str(path), "--out", str(tmp_path / "out")), 3, f"{target}:{line}:", field)
    assert snapshot(tmp_path) == before


def test_unknown_target_lists_targets_beside_a_recipe_outside_recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recipe kept in a plain folder with its own targets/ inside: the list is what would resolve."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "elsewhere"
    (folder / "targets").mkdir(parents=True)
    shutil.copyfile(REPO / "targets" / "x86-cpu.yaml", folder / "targets" / "my-box.yaml")
    (folder / "targets" / "my-box.yaml").write_text((folder / "targets" / "my-box.yaml").read_text().replace("name: x86-cpu", "name: my-box"))
    path = folder / "tiny.yaml"
    path.write_text(BASE.replace("target: x86-cpu", "target: nope"))
    outcome = cli("export", "--recipe", str(path), "--out", str(tmp_path / "out"))
    assert_refused(outcome, 3, f"{path}:3:", "expected one of", "my-box", "x86-cpu")
    from edgecompile.config.recipe import load_recipe

    path.write_text(BASE.replace("target: x86-cpu", "target: my-box"))
    assert load_recipe(path).target.name == "my-box"  # every listed name resolves


@pytest.mark.parametrize("rules", [
    "rules:\n  - {match: {role: mlp}, precision: int4}\n  - {match: {role: mlp}, precision: int8}\n",  # int4 falls through on non-MatMul
    "rules:\n  - {match: {component: text_encoder, role: mlp}, precision: fp16}\n  - {match: {role: mlp}, precision: int8}\n",  # narrower first
    "rules:\n  - {match: {name: 're:layers\\.1\\.'}, precision: null}\n  - {match: {name: 're:layers\\.11\\.'}, precision: null}\n",
    "rules:\n  - {match: {role: embeddings}, precision: int8}\n  - {match: {role: embeddings}, precision: int4}\n",  # int4 also takes embedding tables
])
def test_rules_that_can_fire_are_accepted(tmp_path: Path, rules: str) -> None:
    from edgecompile.config.recipe import load_recipe

    path = _recipe(tmp_path, "anchor")
    path.write_text(BASE + rules)
    assert len(load_recipe(path).recipe.rules) == 2


def test_a_recipe_file_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when an error is reported (error_at looks up the line), each file is read once."""
    from edgecompile.config import loader, strict_yaml
    from edgecompile.config.recipe import load_recipe
    from edgecompile.errors import InputError

    calls: list[str] = []
    real = strict_yaml._load

    def counting(text: str):  # noqa: ANN202
        calls.append(text[:20])
        return real(text)

    monkeypatch.setattr(strict_yaml, "_load", counting)
    loader._PARSED.clear()
    path = _recipe(tmp_path, "anchor")
    path.write_text(BASE + "rules:\n" + "".join(f"  - {{match: {{name: 're:block{i}\\.'}}, precision: fp16}}\n" for i in range(2000)) + "  - {match: {name: 're:block7\\.'}, precision: int8}\n")
    with pytest.raises(InputError, match="can never fire"):
        load_recipe(path)
    assert len(calls) == 2, calls  # the recipe once, its target once
