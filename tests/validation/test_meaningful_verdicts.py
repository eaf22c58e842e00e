"""Verdicts that would pass without meaning anything end in a named failure and a non-zero exit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompile.cli.main import main
from edgecompile.validation.meaning import chance_accuracy, non_finite_outputs, reference_floor
from recipe_files import write_recipe
from tiny_models import save_tiny_clip

ZERO_SHOT = """schema_version: 1
name: {name}
target: x86-cpu
calibration: {{method: minmax, set: synthetic, samples: 4}}
eval: {{set: zero-shot, samples: 48, latency_runs: 3, warmup_runs: 0}}
comparison: {{layer_attribution: false}}
gates:
  - {{name: accuracy drop, metric: accuracy.drop, max: 0.02}}
  - {{name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.5}}
budget_gates: false
"""


def _invoke(*args: str):  # noqa: ANN202
    return CliRunner().invoke(main, list(args))


def test_chance_is_the_best_blind_guess() -> None:
    from edgecompile.data.samples import Sample
    from edgecompile.data.eval_sets import VqaEvalSet, ZeroShotEvalSet

    labelled = ZeroShotEvalSet([Sample(image=None, text="", label=x) for x in "aaab"], ["a", "b", "c", "d"], ["", "", "", ""])
    assert chance_accuracy(labelled) == pytest.approx(0.75)  # always "a" beats 1/4
    uniform = ZeroShotEvalSet([Sample(image=None, text="", label=x) for x in "abcd"], list("abcdefgh"), [""] * 8)
    assert chance_accuracy(uniform) == pytest.approx(0.25)
    vqa = VqaEvalSet([Sample(image=None, text="", question="q", answer=a) for a in ("Red", "red ", "blue", "yes", "no")])
    assert chance_accuracy(vqa) == pytest.approx(0.4)
    assert chance_accuracy(VqaEvalSet([Sample(image=None, text="x")])) is None
    assert reference_floor(0.0625, None) == pytest.approx(0.0625 + 0.1 * 0.9375)
    assert reference_floor(0.0625, 0.5) == 0.5


def test_non_finite_reference_outputs_are_named() -> None:
    import numpy as np

    assert non_finite_outputs({"a/x": np.array([1.0, np.nan]), "b/y": np.ones(2), "t": np.array([1, 2])}) == ["a/x"]


def test_random_weight_clip_on_the_world_fails_as_not_fitting(tmp_path: Path, tiny_clip: Path) -> None:
    recipe = write_recipe(tmp_path, "chance")
    recipe.write_text(ZERO_SHOT.format(name="chance"))
    result = _invoke("build", "--recipe", str(recipe), "--model", str(tiny_clip), "--out", str(tmp_path / "b"))
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["accuracy drop"]["passed"] is False and "does not fit this model" in gates["accuracy drop"]["reason"]
    assert gates["reference fits the eval set"]["passed"] is False
    assert report["metrics"]["accuracy.reference"] < gates["reference fits the eval set"]["threshold"]
    assert report["metrics"]["accuracy.chance"] >= 1 / 16  # 16 world classes, or the most frequent one
    assert "reference fits the eval set" in result.output


def test_missing_tokenizer_files_are_refused_at_load(tmp_path: Path) -> None:
    model = tmp_path / "no-tokenizer"
    shutil.copytree(Path(__file__).resolve().parents[2] / "edgecompile" / "zoo" / "models" / "shapes-clip", model)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (model / f).unlink(missing_ok=True)
    result = _invoke("export", "--recipe", str(write_recipe(tmp_path)), "--model", str(model), "--out", str(tmp_path / "b"))
    assert result.exit_code == 3, result.output
    assert "placeholder tokenizer" in result.output and "tokenizer files in" in result.output


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = save_tiny_clip(tmp_path / "nan-clip")
    weights = load_file(str(model / "model.safetensors"))
    name = next(k for k in weights if k.endswith("mlp.fc1.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    result = _invoke("export", "--recipe", str(write_recipe(tmp_path)), "--model", str(model), "--out", str(tmp_path / "b"))
    assert result.exit_code == 3, result.output
    assert "NaN or Inf" in result.output and name.split(".", 1)[-1] in result.output
    assert not (tmp_path / "b" / "export").exists()


def test_a_recipe_without_any_gate_is_refused(tmp_path: Path, tiny_clip: Path) -> None:
    recipe = write_recipe(tmp_path, "nogates")
    text = recipe.read_text().split("gates:")[0] + "gates: []\nbudget_gates: false\n"
    recipe.write_text(text)
    result = _invoke("build", "--recipe", str(recipe), "--model", str(tiny_clip), "--out", str(tmp_path / "b"))
    assert result.exit_code == 3, result.output
    assert "no gate applies" in result.output and "allow_no_gates" in result.output
    assert not (tmp_path / "b").exists()
    recipe.write_text(text.replace("gates: []", "gates:\n  - {metric: generation.token_agreement, min: 0.9, family: generative}"))
    result = _invoke("export", "--recipe", str(recipe), "--model", str(tiny_clip), "--out", str(tmp_path / "b"))
    assert result.exit_code == 3 and "scoped to another family" in result.output, result.output


def test_a_typo_in_a_gate_for_the_other_family_is_refused_at_load(tmp_path: Path, tiny_clip: Path) -> None:
    recipe = write_recipe(tmp_path, "typo", extra="  - {metric: generation.token_agrement, min: 0.9, family: generative}\n")
    result = _invoke("export", "--recipe", str(recipe), "--model", str(tiny_clip), "--out", str(tmp_path / "b"))
    assert result.exit_code == 3, result.output
    assert "typo.yaml:" in result.output and "gates[1]" in result.output and "unknown metric 'generation.token_agrement'" in result.output
