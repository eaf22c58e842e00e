"""Sweep: one base recipe x a grid of overrides, each point built in a sibling build directory.

The grid YAML maps dotted recipe fields to lists of values, e.g.::

    axes:
      precision_preset: [fp16, w8a8, w4a8]
      calibration.method: [minmax, percentile]
      calibration.set: [synthetic]

Each point's derived recipe is written to ``<root>/recipes/<name>.yaml`` (with its target copied to
``<root>/targets/``, so the repository layout rule finds it) and built into ``<root>/<name>/``.
Stages are reused across points: as a point runs, each stage whose input fingerprint equals that
of an already-built sibling (or of ``reuse_from`` build directories) is copied from it together
with its manifest record by the pipeline's reuse hook instead of being run again. Points that differ
only in calibration reuse export and annotate; the export (the slow torch step) runs once.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from edgecompile.config.recipe import Recipe, load_recipe
from edgecompile.config.strict_yaml import parse_file
from edgecompile.errors import InputError
from edgecompile.stages.base import StageResult
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import run_until
from edgecompile.stages.validate import publish_report


def load_grid(path: Path) -> dict[str, list[Any]]:
    data, _ = parse_file(path, InputError, what="sweep grids")
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise InputError(f"{path}: expected a mapping with 'axes: {{<dotted recipe field>: [values, ...]}}'")
    for key, values in data["axes"].items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: axes.{key}: expected a non-empty list of values")
    return {str(k): list(v) for k, v in data["axes"].items()}


def _slug(value: Any) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(value).lower()).strip("-")


def points(base: dict[str, Any], axes: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every grid point as (name, derived recipe document)."""
    out = []
    for combo in itertools.product(*axes.values()):
        doc = yaml.safe_load(yaml.safe_dump(base))
        for key, value in zip(axes, combo, strict=True):
            node = doc
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        calibration = doc.get("calibration", {})
        if calibration.get("method", "minmax") != "percentile":
            calibration.pop("percentile", None)  # the base's percentile means nothing for minmax/entropy points
        name = "-".join([base["name"], *(_slug(v) for v in combo)])
        doc["name"] = name
        out.append((name, doc))
    return out


def run_sweep(
    recipe_path: Path, grid_path: Path, root: Path, model: str | None, reuse_from: tuple[Path, ...] = (), on_point: Callable[[str, list[str], list[StageResult], dict], None] | None = None
) -> list[dict[str, Any]]:
    """Build every grid point; returns one row per point (name, build dir, verdict, reused stages)."""
    resolved = load_recipe(recipe_path)
    base = resolved.recipe.model_dump(mode="json", exclude_unset=True)
    axes = load_grid(grid_path)
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "targets").mkdir(parents=True, exist_ok=True)
    target_src = Path(resolved.target_path)  # where config.resolve found it, as for 'build'
    shutil.copyfile(target_src, root / "targets" / target_src.name)
    built: list[Path] = [p.resolve() for p in reuse_from]
    rows = []
    for name, doc in points(base, axes):
        try:
            Recipe.model_validate(doc)
        except ValueError as exc:
            raise InputError(f"{grid_path}: point '{name}' is not a valid recipe: {exc}") from None
        derived = root / "recipes" / f"{name}.yaml"
        derived.write_text(yaml.safe_dump(doc, sort_keys=False))
        ctx = BuildContext.create(derived, model or resolved.recipe.model, root / name)
        results = run_until(ctx, "validate", reuse_from=built)
        reused = [r.stage for r in results if r.reused_from is not None]
        report = publish_report(ctx)
        row = {"name": name, "build_dir": str(ctx.build_dir), "verdict": report["verdict"], "reused": reused, "skipped": [r.stage for r in results if r.skipped], "ran": {r.stage: round(r.wall_s, 2) for r in results if not r.skipped}}
        rows.append(row)
        built.append(ctx.build_dir)
        if on_point is not None:
            on_point(name, reused, results, report)
    return rows
