"""The stage-result contract: typed outputs handed forward, identical whether a stage ran or was skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompile.errors import StageError
from edgecompile.stages import STAGE_ORDER
from edgecompile.stages.base import run_stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import STAGES, recorded, run_until
from edgecompile.stages.results import OUTPUT_TYPES, AnnotatedPlan, BuiltArtifact, CalibrationRanges, ExportedGraphs, TransformedGraphs, Upstream


def test_every_stage_declares_its_output_and_requires_only_earlier_stages() -> None:
    assert tuple(STAGES) == STAGE_ORDER == tuple(OUTPUT_TYPES)
    for index, (name, stage) in enumerate(STAGES.items()):
        assert stage.output_type is OUTPUT_TYPES[name]
        assert set(stage.requires) <= set(STAGE_ORDER[:index]), name


def test_results_carry_typed_outputs_and_upstream_fingerprints(build_copy: Path) -> None:
    ctx = BuildContext.open(build_copy)
    results = {r.stage: r for r in run_until(ctx, "validate")}
    assert isinstance(results["export"].output, ExportedGraphs)
    assert set(results["export"].output.files) == {"vision_encoder", "text_encoder"}
    assert all(p.is_file() for p in results["export"].output.files.values())
    assert isinstance(results["annotate"].output, AnnotatedPlan) and results["annotate"].output.plan().entries
    transform = results["transform"].output
    assert isinstance(transform, TransformedGraphs) and transform.transforms == []
    assert transform.files == results["export"].output.files  # no transform: the exported graphs are read as they are
    assert isinstance(results["calibrate"].output, CalibrationRanges) and results["calibrate"].output.ranges()
    built = results["build"].output
    assert isinstance(built, BuiltArtifact) and built.artifact.backend == "ort-cpu" and built.effective_plan().entries
    report = results["validate"].output.load()
    assert report["verdict"] in ("pass", "fail")
    manifest = ctx.manifest()
    for name in STAGE_ORDER:  # each stage's recorded inputs name the fingerprints of the outputs it requires
        for required in STAGES[name].requires:
            assert manifest.stages[name].inputs[f"stage:{required}"] == results[required].fingerprint


def test_a_skipped_stage_hands_forward_the_same_output_as_a_run(build_copy: Path) -> None:
    ctx = BuildContext.open(build_copy)
    first = {r.stage: r for r in run_until(ctx, "build", force=frozenset({"annotate"}))}
    again = {r.stage: r for r in run_until(ctx, "build")}
    assert not first["annotate"].skipped and again["annotate"].skipped
    for name in first:
        assert first[name].output == again[name].output and first[name].fingerprint == again[name].fingerprint


def test_a_stage_without_its_upstream_is_an_error_not_a_guess(tiny_clip: Path, tmp_path: Path) -> None:
    from recipe_files import write_recipe

    ctx = BuildContext.create(write_recipe(tmp_path), str(tiny_clip), tmp_path / "b")
    with pytest.raises(StageError, match="needs the output of export"):
        run_stage(ctx, STAGES["annotate"], {})


def test_recorded_reads_a_completed_stage_and_refuses_a_missing_one(build_copy: Path, tmp_path: Path) -> None:
    from edgecompile.errors import InputError

    ctx = BuildContext.open(build_copy)
    assert recorded(ctx, "build").output.artifact.components
    manifest = json.loads((build_copy / "manifest.json").read_text())
    del manifest["stages"]["build"]
    (build_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="stage 'build' has not completed"):
        recorded(BuildContext.open(build_copy), "build")


def test_upstream_graphs_prefer_the_transformed_ones(tmp_path: Path) -> None:
    exported = ExportedGraphs(tmp_path, {"decoder": tmp_path / "export" / "decoder.onnx"})
    transformed = TransformedGraphs(tmp_path, {"decoder": tmp_path / "transform" / "decoder.onnx"}, ["gptq"])
    assert Upstream(export=exported).graphs() == exported.files
    assert Upstream(export=exported, transform=transformed).graphs() == transformed.files
