"""The recipe's ``token_pruning`` section end to end: strict validation, the calibrated schedule, the pruned artifact, validate's rows.

shapes-llava (2 decoder layers, 36 image tokens) through the shipped x86-cpu recipe with
``token_pruning`` after layer 0: calibrate writes the QUOTA schedule, the ORT CPU build prunes the
fused decoder, the bundle's generation.json tells the runtime to feed the mask, and validate reports
retention and the pruned-vs-unpruned prefill of the artifact itself.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest

from edgecompile.config.recipe import load_recipe
from edgecompile.errors import InputError
from recipe_files import REPO, write_recipe


@pytest.mark.parametrize(("section", "message"), [
    ("token_pruning: {floor: 0.5, final_keep: 0.3}", "floor: expected <= final_keep"),
    ("token_pruning: {candidate_layers: [2, 1]}", "ascending"),
    ("token_pruning: {keep_ratios: [0.5]}", "one cumulative keep ratio per entry"),
    ("token_pruning: {candidate_layers: [1, 2], keep_ratios: [0.3, 0.5]}", "non-increasing"),
    ("token_pruning: {candidate_layers: [1], keep_ratios: [0.3], temperature: 2.0}", "temperature: not used with explicit keep_ratios"),
    ("token_pruning: {schedule: uniform, temperature: 2.0}", "only used with schedule: quota"),
    ("token_pruning: {weights: {inter_modal: 1.0}}", "expected keys inter_modal"),
    ("token_pruning: {final_keep: 0}", "greater than 0"),
    ("token_pruning: {keep: 0.3}", "keep: unknown key"),
])
def test_section_is_validated_strictly(tmp_path: Path, section: str, message: str) -> None:
    path = write_recipe(tmp_path, extra=section + "\n")
    with pytest.raises(InputError, match=re.escape(message)):
        load_recipe(path)


def test_other_backends_are_refused_naming_the_target(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, extra="token_pruning: {final_keep: 0.3}\n")
    text = path.read_text()
    path.write_text(text.replace("target: x86-cpu", "target: jetson-orin-nano"))
    with pytest.raises(InputError, match=r"token_pruning: token pruning runs in the ONNX Runtime CPU decoder .* and the static HTP decoder .* only; target 'jetson-orin-nano'"):
        load_recipe(path)
    path.write_text(text.replace("target: x86-cpu", "target: snapdragon-8-gen-3"))  # the static HTP decoder prunes too
    assert load_recipe(path).recipe.token_pruning is not None


def _recipe(root: Path, section: str) -> Path:
    (root / "recipes").mkdir(parents=True)
    shutil.copytree(REPO / "targets", root / "targets")
    text = (REPO / "recipes" / "x86-cpu.yaml").read_text()
    text = re.sub(r"(\n  samples:) 64", r"\1 8", text)
    text = re.sub(r"(\n  samples:) 300", r"\1 8", text)
    text = re.sub(r"latency_runs: \d+", "latency_runs: 3", text)
    path = root / "recipes" / "x86-cpu.yaml"
    path.write_text(text + section)
    return path


def test_refusals_happen_before_a_build_directory_exists(tmp_path: Path) -> None:
    from edgecompile.stages.context import BuildContext

    cases = [
        ("shapes-llava", "token_pruning: {candidate_layers: [1]}\n", "candidate_layers: expected layers in 0..0"),
        ("shapes-llava", "token_pruning: {}\n", "got []"),  # auto on a 2-layer decoder: no layer 1..0
        ("shapes-clip", "token_pruning: {}\n", "is a dual_encoder model"),
    ]
    for i, (model, section, message) in enumerate(cases):
        root = tmp_path / str(i)
        recipe = _recipe(root, section)
        with pytest.raises(InputError, match=re.escape(message)):
            BuildContext.create(recipe, model, root / "build")
        assert not (root / "build").exists()


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (BuildContext, report dict)
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    root = tmp_path_factory.mktemp("pruned-llava")
    recipe = _recipe(root, "token_pruning: {final_keep: 0.5, candidate_layers: [0], sensitivity: {samples: 4}}\n")
    ctx = BuildContext.create(recipe, "shapes-llava", root / "build")
    run_until(ctx, "validate")
    return ctx, json.loads((ctx.build_dir / "validate" / "report.json").read_text())


def test_calibrate_writes_the_schedule(validated) -> None:  # noqa: ANN001
    ctx, _ = validated
    data = json.loads((ctx.build_dir / "calibrate" / "token_pruning.json").read_text())
    assert data["layers"] == [0] and data["keep_ratios"] == [0.5] and data["reference_visual_tokens"] == 36
    assert len(data["sensitivity"]) == 1 and data["sensitivity"][0] > 0  # measured, W4A4, on the calibration set
    assert data["inputs"]["method"] == "quota" and data["inputs"]["weights"]["residual"] == 0.2


def test_artifact_prunes_and_the_bundle_says_so(validated) -> None:  # noqa: ANN001
    ctx, _ = validated
    build = ctx.build_dir / "build"
    decoder = onnx.load(str(build / "decoder.onnx"), load_external_data=False)
    assert "visual_token_mask" in {i.name for i in decoder.graph.input}
    assert sum(n.op_type == "If" for n in decoder.graph.node) == 1
    assert json.loads((build / "bundle" / "io.json").read_text())["generation"]["visual_token_mask"] is True
    assert any("onnxruntime-genai does not feed it" in n for n in json.loads((build / "bundle" / "bundle.json").read_text())["notes"])
    notes = json.loads((build / "artifact.json").read_text())["notes"]
    assert any("visual tokens pruned in the graph" in n and "k=18" in n for n in notes)


def test_validate_reports_retention_and_what_pruning_saved(validated) -> None:  # noqa: ANN001
    _, report = validated
    m = report["metrics"]
    assert m["token_pruning.kept_visual_fraction"] == 0.5
    # layer 0 holds the whole prompt, layer 1 the text + 18 of 36 image tokens
    prompt = m["token_pruning.kv_cache_bytes"] / m["token_pruning.kv_cache_ratio"]
    assert 0.6 < m["token_pruning.kv_cache_ratio"] < 0.9 and prompt > m["token_pruning.kv_cache_bytes"]
    assert 0.5 < m["token_pruning.flops_ratio"] < 0.95
    assert m["token_pruning.prefill_ms"] > 0 and m["token_pruning.unpruned_prefill_ms"] > 0
    assert 0.0 <= m["accuracy.retention"] <= 1.5 and m["accuracy.retention"] == pytest.approx(m["accuracy"] / m["accuracy.reference"])


def test_generation_prunes_only_when_fed_the_mask(validated) -> None:  # noqa: ANN001
    """The same INT4 artifact: fed no mask it runs unpruned (every layer caches the whole prompt); fed the mask it prunes.

    Pruned, layer 1's cache holds exactly the dropped image tokens fewer (layer 0 keeps the whole
    prompt), through every decode step. Keep 1.0 being bit-exact is tests/backends/test_token_pruning.py's.
    """
    from dataclasses import replace

    import numpy as np

    from edgecompile.data.eval_sets import vqa_eval_set
    from edgecompile.pruning.allocation import KeepSchedule
    from edgecompile.runtime.generate import generate
    from edgecompile.runtime.onnx_cpu import CpuRunner

    ctx, _ = validated
    files = {c: f"{c}.onnx" for c in ("vision_encoder", "embed_tokens", "decoder")}
    spec = replace(ctx.adapter.generation_spec(ctx.loaded().config), eos_token_ids=())
    runner = CpuRunner(ctx.build_dir / "build", files)
    assert runner.fast_decoder(spec.layers, 64) is None  # a pruned graph never takes the shared buffer

    def generic(component: str, feeds: dict) -> dict:
        return runner(component, feeds)

    loaded = ctx.loaded()
    for sample in vqa_eval_set(2).samples:
        ids, pixels = ctx.adapter.encode(loaded, sample.image, sample.question)
        plain = generate(generic, spec, ids, pixels, 6)
        pruned = generate(runner, replace(spec, visual_token_mask=True), ids, pixels, 6)
        assert plain.cache_bytes == spec.cache_bytes(ids.shape[1] + 5)
        n_visual = int((ids == spec.image_token_id).sum())
        dropped = n_visual - KeepSchedule((0,), (0.5,), n_visual).budgets()[0]
        assert pruned.cache_bytes == plain.cache_bytes - spec.cache_bytes(dropped) // spec.layers
        assert np.isfinite(pruned.first_logits).all() and len(pruned.tokens) == 6


def test_edgecompile_run_answers_with_the_pruned_artifact(validated, tmp_path: Path) -> None:  # noqa: ANN001
    """`edgecompile run` feeds the mask (the artifact prunes) and reads the image-token count from the vision graph."""
    from click.testing import CliRunner

    from edgecompile.cli.main import main
    from edgecompile.cli.run_cmd import _static_image_tokens
    from edgecompile.data.eval_sets import vqa_eval_set

    ctx, _ = validated
    sample = vqa_eval_set(1).samples[0]
    sample.image.save(tmp_path / "scene.png")
    assert _static_image_tokens(ctx.build_dir / "build" / "vision_encoder.onnx") == 36
    assert _static_image_tokens(tmp_path / "scene.png") is None  # not a graph: no count, no error
    result = CliRunner().invoke(main, ["run", "--build", str(ctx.build_dir), "-i", str(tmp_path / "scene.png"), "-p", sample.question, "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "stopped by" in result.output
