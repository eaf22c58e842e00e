"""The seed-002 grids: the seed's five configurations x four calibration sets, every point a valid
recipe, and the ablation grids (fixed-alpha AWQ, low-bit probes) on the same per-channel INT4."""

from __future__ import annotations

from pathlib import Path

from edgecompile.config.recipe import load_recipe
from edgecompile.sweep.grid import check_points, load_grid_spec, points

REPO = Path(__file__).resolve().parents[2]
GRIDS = REPO / "recipes" / "grids"


def _points(grid: str) -> list[tuple[str, dict]]:
    path = GRIDS / grid
    base = load_recipe(REPO / "recipes" / "x86-cpu.yaml").recipe.model_dump(mode="json", exclude_unset=True)
    axes = load_grid_spec(path).axes
    check_points(path, base, axes)  # strict: raises InputError naming the axis line
    return points(base, axes)


def test_seed002_grid_is_the_seeds_table_times_four_calibration_sets() -> None:
    pts = _points("seed-002.yaml")
    assert len(pts) == 20
    presets = {doc["precision_preset"] for _, doc in pts}
    sets = {doc["calibration"]["set"] for _, doc in pts}
    assert presets == {"fp16", "w8a8", "w8a8-sq", "w4a8", "w4a8-awq"}
    assert sets == {"balanced", "dark", "gray", "noise"}
    assert all(doc["calibration"]["method"] == "minmax" and "percentile" not in doc["calibration"] for _, doc in pts)
    assert all(doc["quantization"]["int4_granularity"] == "per_channel" for _, doc in pts)  # the seed's INT4


def test_ablation_grids_are_valid_and_per_channel() -> None:
    fixed = _points("seed-002-awq-fixed.yaml")
    assert {tuple(doc["quantization"]["weight_transforms"]) for _, doc in fixed} == {("awq-fixed",)}
    assert "per_channel" in {doc["quantization"]["int4_granularity"] for _, doc in fixed}
    low = _points("seed-002-lowbit.yaml")
    assert {tuple(doc["quantization"]["weight_transforms"]) for _, doc in low} == {("int3-probe",), ("int2-probe",)}
    assert len(low) == 4


def test_report_lists_merged_points_under_the_row_they_share(built: Path, tmp_path: Path) -> None:
    """A sweep's merged points (sweep.json) are named in the report, under the build they share."""
    import json
    import shutil

    from edgecompile.reports.aggregate import aggregate_markdown, collect

    root = tmp_path / "sweep"
    shutil.copytree(built.parent, root)
    kept = root / built.name
    shutil.rmtree(kept / "robustness", ignore_errors=True)  # the shared build may have one from another test
    why = "calibration.set: 'dark' vs 'balanced': the build stage's inputs coincide; the artifact was built once"
    (root / "sweep.json").write_text(json.dumps({"points": [
        {"name": "p-balanced", "state": "built", "build_dir": str(kept)},
        {"name": "p-dark", "state": "merged", "merged_into": "p-balanced", "build_dir": str(kept), "level": "build inputs", "why": why},
    ]}))
    rows = collect([kept])
    assert rows[0]["merged"] == [{"point": "p-dark", "into": "p-balanced", "level": "build inputs", "why": why}]
    assert rows[0]["label"].endswith("(+1 merged)")
    md = aggregate_markdown(rows)
    assert "Merged grid points (1" in md and "p-dark" in md and why in md
    assert "Robustness (RS, mCE, CE): not measured" in md  # the tiny build has no robustness.json
    alone = collect([built])  # no sweep.json next to it: nothing merged, label unchanged
    assert alone[0]["merged"] == [] and "merged" not in alone[0]["label"]
