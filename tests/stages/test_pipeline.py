"""The pipeline on a tiny CLIP: parity, the build on ORT CPU, reruns that skip, failures that leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from edgecompile.stages.context import recorded_recipe

from edgecompile.builddir.manifest import Manifest
from edgecompile.stages.base import run_stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import STAGES, run_until


def test_export_records_parity_per_component(tiny_build: Path) -> None:
    summary = Manifest.load(tiny_build).stages["export"].summary
    for component in ("vision_encoder", "text_encoder"):
        parity = summary["components"][component]["parity"]
        assert parity["cosine"] >= 0.9999
        assert parity["max_abs_error"] < 1e-3
        assert parity["batches_checked"] == 2  # two batch sizes: the batch axis really is dynamic


def test_manifest_records_hashes_tools_time_and_memory(tiny_build: Path) -> None:
    manifest = json.loads((tiny_build / "manifest.json").read_text())
    for name in ("export", "annotate", "calibrate", "build", "validate"):
        record = manifest["stages"][name]
        assert len(record["fingerprint"]) == 64
        assert all(len(h) == 64 for h in record["outputs"].values())
        assert "onnxruntime" in record["tools"] and "torch" in record["tools"]
        assert record["wall_s"] >= 0 and record["peak_rss_mb"] > 10


def test_build_quantizes_linears_and_keeps_patch_embedding_float(tiny_build: Path) -> None:
    model = onnx.load(str(tiny_build / "build" / "vision_encoder.onnx"))
    ops = [n.op_type for n in model.graph.node]
    # 2 layers x 4 quantized activations (LN1 out, attention out, LN2 out, MLP hidden) + 12 weights
    assert ops.count("QuantizeLinear") == 8 and ops.count("DequantizeLinear") == 20
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers.get(conv.input[1]) != "DequantizeLinear"  # patch embedding weight not quantized
    plan = json.loads((tiny_build / "build" / "plan.effective.json").read_text())
    conv_entry = next(e for e in plan["entries"] if e["op_type"] == "Conv")
    assert conv_entry["role"] == "patch_embed" and conv_entry["precision"] == "float"
    assert conv_entry["changed_from"] == "fp16" and "no native FP16" in conv_entry["why"]


def test_report_has_the_contract_fields(tiny_build: Path) -> None:
    report = json.loads((tiny_build / "report.json").read_text()) if (tiny_build / "report.json").exists() else json.loads((tiny_build / "validate" / "report.json").read_text())
    assert report["verdict"] in ("pass", "fail")
    assert {"gates", "metrics", "stages", "artifacts", "where"} <= set(report)
    gate = report["gates"][0]
    assert {"name", "value", "threshold", "passed"} <= set(gate)
    metrics = report["metrics"]
    assert metrics["drift.vision_encoder.image_embeds.cosine_mean"] > 0.95
    assert metrics["latency.vision_encoder.p50_ms"] > 0 and metrics["latency.reference.vision_encoder.p90_ms"] > 0
    assert 0 < metrics["memory.peak_mb"] < 2048
    assert report["where"]["backend"] == "ort-cpu" and report["where"]["executed"] is True


def test_rerun_skips_unchanged_stages(build_copy: Path) -> None:
    ctx = BuildContext.open(build_copy)
    results = run_until(ctx, "validate")
    assert [r.skipped for r in results] == [True] * 6


def test_changed_calibration_redoes_only_later_stages(build_copy: Path) -> None:
    recipe = recorded_recipe(build_copy)
    recipe.write_text(recipe.read_text().replace("method: minmax", "method: percentile"))
    ctx = BuildContext.open(build_copy)
    results = {r.stage: r.skipped for r in run_until(ctx, "build")}
    assert results == {"export": True, "annotate": True, "transform": True, "calibrate": False, "build": False}


def test_damaged_output_is_redone(build_copy: Path) -> None:
    (build_copy / "annotate" / "plan.json").write_text("{}")
    ctx = BuildContext.open(build_copy)
    assert run_stage(ctx, STAGES["annotate"]).skipped is False
    assert json.loads((build_copy / "annotate" / "plan.json").read_text())["entries"]


class _Interrupted(RuntimeError):
    pass


def test_failed_stage_leaves_no_half_written_output(build_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (build_copy / "build" / "vision_encoder.onnx").read_bytes()

    def explode(self, ctx, out, upstream):  # noqa: ANN001, ANN202
        (out / "vision_encoder.onnx").write_bytes(b"half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(type(STAGES["build"]), "run", explode)
    ctx = BuildContext.open(build_copy)
    with pytest.raises(KeyboardInterrupt):
        run_stage(ctx, STAGES["build"], force=True)
    assert (build_copy / "build" / "vision_encoder.onnx").read_bytes() == before  # the old artifact is intact
    assert not list(build_copy.glob(".*partial*"))


def test_failed_first_build_leaves_no_artifact_dir(tiny_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recipe_files import write_recipe
    from edgecompile.errors import StageError

    def explode(self, ctx, out, upstream):  # noqa: ANN001, ANN202
        (out / "vision_encoder.onnx").write_bytes(b"half written")
        raise ValueError("simulated backend crash")

    ctx = BuildContext.create(write_recipe(tmp_path), str(tiny_clip), tmp_path / "b")
    monkeypatch.setattr(type(STAGES["export"]), "run", explode)
    with pytest.raises(StageError, match="stage 'export' failed: ValueError: simulated backend crash"):
        run_until(ctx, "export")
    assert not (tmp_path / "b" / "export").exists()
    assert not list((tmp_path / "b").glob(".*partial*"))


def test_asymmetric_int8_weight_rule_is_refused_not_ignored(build_copy: Path) -> None:
    """A rule asking asymmetric INT8 weights fails the build with exit 3 instead of being dropped."""
    from click.testing import CliRunner

    from edgecompile.cli.main import main

    recipe = recorded_recipe(build_copy)
    recipe.write_text(recipe.read_text() + "rules:\n  - {match: {role: mlp}, precision: int8, symmetric: false}\n")
    result = CliRunner().invoke(main, ["build", "--build", str(build_copy)])
    assert result.exit_code == 3, result.output
    assert "symmetric: false" in result.output and "not supported" in result.output
