"""Sweeps across models: the local and the Ray engine give the same report; duplicates are merged once;
a failing point does not stop the others.

The grid spans two models (the tiny CLIP and a copy whose checkpoint holds a NaN: its export is
refused) and two calibration sizes of an FP16 plan: FP16 builds read no activation ranges, so the
two calibration sizes build byte-identical artifacts and the second point is merged into the first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tiny_build import tiny_model, write_recipe

from edgecompile.sweep import SWEEP_FILE, load_grid_spec, points, run_sweep
from edgecompile.sweep.dedupe import recipe_key

GRID = "axes:\n  model: [{good}, {bad}]\n  precision_preset: [fp16]\n  calibration.samples: [8, 4]\nresources:\n  validate: {{num_cpus: 1}}\n"


@pytest.fixture(scope="module")
def grid(built: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("sweep-grid")
    bad = root / "nan-clip"
    shutil.copytree(tiny_model(), bad)
    weights = next(bad.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("fc1.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    path = root / "grid.yaml"
    path.write_text(GRID.format(good=tiny_model(), bad=bad))
    return write_recipe(root / "repo", "tiny"), path


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What must agree between engines: everything but timings, process memory, paths and stage provenance."""
    out = []
    for r in rows:
        keep = {k: v for k, v in r.items() if k not in ("build_dir", "failed_dir", "ran", "reused", "skipped", "error")}
        if "metrics" in keep:
            keep["metrics"] = {k: v for k, v in keep["metrics"].items() if not k.startswith(("latency.", "memory."))}
        out.append(keep)
    return out


@pytest.fixture(scope="module")
def local(built: Path, grid: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("local") / "sweep"
    seen: list[str] = []
    rows = run_sweep(grid[0], grid[1], root, None, reuse_from=(built,), on_point=lambda row: seen.append(row["name"]))
    assert sorted(seen) == sorted(r["name"] for r in rows)  # progress: every point reported as it finished
    return root, rows


def test_grid_spec_reads_model_axes_and_resources(grid: tuple[Path, Path]) -> None:
    spec = load_grid_spec(grid[1])
    assert list(spec.axes) == ["model", "precision_preset", "calibration.samples"]
    assert spec.resources_for("validate").ray_options() == {"num_cpus": 1.0} and spec.resources_for("export").num_cpus == 1.0


def test_points_equal_after_normalisation_share_a_recipe_key() -> None:
    # A percentile on a minmax point means nothing: both points are the same recipe.
    pts = points({"name": "r", "calibration": {"method": "minmax"}}, {"calibration.percentile": [99.9, 99.99]})
    assert recipe_key(pts[0][1]) == recipe_key(pts[1][1])


def test_duplicates_are_merged_and_a_failing_point_does_not_stop_the_others(local: tuple[Path, list[dict[str, Any]]]) -> None:
    root, rows = local
    by = {r["name"]: r for r in rows}
    assert [r["state"] for r in rows] == ["built", "merged", "failed", "failed"], rows
    good8, good4 = rows[0], rows[1]
    assert good8["verdict"] in ("pass", "fail") and good8["artifact_hash"] and "export" in good8["reused"]
    assert good4["merged_into"] == good8["name"] and good4["level"] in ("build inputs", "artifact")
    assert "calibration.samples: 4 vs 8" in good4["why"]
    assert not (root / good4["name"]).exists()  # reported once: no second build directory
    bad = [r for r in rows if r["state"] == "failed"]
    assert all(r["exit_code"] == 3 and "NaN" in r["error"] and r["phase"] in ("export", "prepare") for r in bad)
    record = json.loads((root / SWEEP_FILE).read_text())
    assert record["engine"] == "local" and [m["point"] for m in record["merged"]] == [good4["name"]]
    assert [f["name"] for f in record["failed"]] == [r["name"] for r in bad] and by[good8["name"]]["state"] == "built"
    assert {p.name for p in root.iterdir() if (p / "build.json").is_file()} == {good8["name"]}  # what 'edgecompile report <root>/*' aggregates


def test_ray_sweep_equals_the_local_one(built: Path, grid: tuple[Path, Path], local: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from edgecompile.sweep.ray_engine import RayExecutor

    executor = RayExecutor(num_cpus=2, max_retries=1)
    try:
        rows = run_sweep(grid[0], grid[1], tmp_path / "sweep", None, reuse_from=(built,), executor=executor, retries=1)
    finally:
        executor.close()
    assert _comparable(rows) == _comparable(local[1])
    assert json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())["engine"] == "ray"


def test_cli_refuses_ray_options_for_the_local_engine(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgecompile.cli.main import main as cli

    grid = tmp_path / "g.yaml"
    grid.write_text("axes:\n  calibration.samples: [8]\n")
    result = CliRunner().invoke(cli, ["sweep", "--recipe", str(write_recipe(tmp_path, "tiny")), "--grid", str(grid), "--cpus", "2"])
    assert result.exit_code == 2 and "--engine ray" in result.output


def test_grid_files_are_strict(tmp_path: Path) -> None:
    from edgecompile.errors import InputError

    path = tmp_path / "g.yaml"
    for text, expected in (("axes: {a: [1, 1]}\n", "listed twice"), ("axes: {a: [1]}\nextra: 1\n", "unknown key"), ("axes: {a: [1]}\nresources: {build: {num_cpus: 0}}\n", "resources.build.num_cpus")):
        path.write_text(text)
        with pytest.raises(InputError, match=expected):
            load_grid_spec(path)
