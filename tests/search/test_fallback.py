"""Automatic precision fallback on a tiny CLIP with one layer deliberately damaged.

The damage: vision layer 1's ``layer_norm2`` zeroes feature 0 (gamma = beta = 0) and ``mlp.fc1``
gets a weight 1000x larger than the rest on that feature. The float function is unchanged (the
feature is exactly 0), but per-channel INT8 weights of fc1 round every other weight to zero: that
one layer breaks the drift gate, and the attribution must point at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from tiny_build import write_recipe
from tiny_models import save_tiny_clip

from edgecompile.config.recipe import Fallback, load_recipe
from edgecompile.search.candidates import Member, next_precision, rank
from edgecompile.search.fallback import run_with_fallback

DAMAGED = "vision_model.encoder.layers.1.mlp.fc1"
RECIPE = """schema_version: 1
name: {name}
target: x86-cpu
precision_preset: w8a8
calibration: {{set: synthetic, samples: 8}}
eval: {{set: synthetic, samples: 8, latency_runs: 3, warmup_runs: 0}}
comparison: {{max_iterations: 4, layer_samples: 2}}
fallback: {{max_steps: {steps}}}
budget_gates: false
gates:
  - {{name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: {bound}}}
"""


_BUILT: list[Path] = []  # the first fallback build: later tests copy its export instead of redoing it


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import CLIPModel

    path = save_tiny_clip(tmp_path_factory.mktemp("damaged") / "clip")
    model = CLIPModel.from_pretrained(path).eval()
    layer = model.vision_model.encoder.layers[1]
    with torch.no_grad():
        layer.layer_norm2.weight[0] = 0.0
        layer.layer_norm2.bias[0] = 0.0
        layer.mlp.fc1.weight[:, 0] = 1000.0 * layer.mlp.fc1.weight.abs().max()
    model.save_pretrained(path)
    return path


def test_ladder_and_ranking_prefer_the_cheapest_worst_offender() -> None:
    assert [next_precision(p) for p in ("int4", "int8", "fp16", "fp32", "float")] == ["int8", "fp16", "fp32", None, None]
    big = Member("v", "n1", "a.layers.0.fc1", "int8", "fp16", 10_000, 0.5)
    small = Member("v", "n2", "a.layers.1.fc1", "int8", "fp16", 100, 0.4)
    tiny_harmless = Member("v", "n3", "a.layers.1.fc2", "int8", "fp16", 10, 0.001)
    ranked = rank([big, small, tiny_harmless])
    assert [c.key for c in ranked] == ["v/a.layers.1.fc1", "v/a.layers.0.fc1"]  # per byte; the harmless one is no offender
    groups = rank([big, small, tiny_harmless], granularity="group")
    assert {c.key for c in groups} == {"v/a.layers.0", "v/a.layers.1"} and len(groups[0].members) == 2


def test_component_gates_steer_the_search_to_their_component() -> None:
    from edgecompile.search.fallback import _components

    both = {"vision_encoder", "text_encoder"}
    image = {"name": "image drift", "metric": "drift.vision_encoder.image_embeds.cosine_mean"}
    accuracy = {"name": "accuracy drop", "metric": "accuracy.drop"}
    assert _components({"gates": [image]}, ["image drift"], both) == {"vision_encoder"}
    assert _components({"gates": [image, accuracy]}, ["image drift", "accuracy drop"], both) == both


def test_fallback_section_is_strict(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "r", RECIPE.format(name="r", steps=3, bound=0.5).replace("fallback: {max_steps: 3}", "fallback: {max_steps: 3, objective: accuracy_per_mb}"))
    with pytest.raises(Exception, match="objective"):
        load_recipe(path)
    assert Fallback().enabled is False


def test_fallback_raises_the_damaged_layer_first_and_passes(damaged: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "frag", RECIPE.format(name="frag", steps=4, bound=0.999))
    result = run_with_fallback(recipe, str(damaged), tmp_path / "build")
    _BUILT.append(result.build_dir)
    first = result.steps[0]
    assert first.verdict == "fail" and first.failed_gates == ["image drift"] and first.min_cosine is not None and first.min_cosine < 0.999
    assert result.status == "PASSED" and result.exit_code == 0, result.reason
    assert [c["module"] for c in result.steps[1].change] == [DAMAGED]
    assert result.steps[1].change[0]["from"] == "int8" and result.steps[1].change[0]["to"] == "fp16"
    assert "export" not in result.steps[1].ran and "annotate" in result.steps[1].ran  # only what changed is redone
    rules = yaml.safe_load((tmp_path / "build" / "fallback" / "rules.yaml").read_text())["rules"]
    assert rules[0]["match"] == {"component": "vision_encoder", "name": DAMAGED} and rules[0]["precision"] == "fp16"
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["verdict"] == "pass" and report["fallback"]["status"] == "PASSED" and "| 1 |" in report["fallback"]["table"]
    # The rules the user commits reproduce the passing plan: prepended to the recipe, a plain build passes.
    text = recipe.read_text().replace("gates:\n", "rules:\n" + "".join(f"  - {json.dumps(r)}\n" for r in rules) + "gates:\n")
    assert load_recipe(write_recipe(tmp_path / "committed", "frag", text)).recipe.rules[0].match.name == DAMAGED


def test_fallback_stops_at_the_step_limit_with_the_best_plan(damaged: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "never", RECIPE.format(name="never", steps=1, bound=1.5))  # a cosine never reaches 1.5
    result = run_with_fallback(recipe, str(damaged), tmp_path / "build", reuse_from=tuple(_BUILT))
    assert result.status == "FAILED" and result.exit_code == 1 and "step limit" in result.reason
    assert len(result.steps) == 2 and [c["module"] for c in result.steps[1].change] == [DAMAGED]
    assert result.final_step == 1  # the raised plan drifts less: it is the best found, and the build holds it
    assert (tmp_path / "build" / "fallback" / "rules.yaml").read_text().count("name:") == 1
    assert json.loads((tmp_path / "build" / "report.json").read_text())["fallback"]["status"] == "FAILED"
