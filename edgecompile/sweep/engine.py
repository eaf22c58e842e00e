"""The sweep driver: the same phases, merges and report for every engine.

A sweep runs in waves (see sweep/point.py for what each phase does):

1. ``export``: the first point of each distinct export input (model, adapter, opset) runs
   export..calibrate, so an export is done once per model even when points run in parallel;
2. ``prepare``: every other point runs export..calibrate, reusing what its siblings wrote;
   points whose build stage would get the same inputs are merged (sweep/dedupe.py);
3. ``build``: one build per distinct build input; points with byte-identical artifacts are merged;
4. ``validate``: every remaining point is validated; each row is reported as it finishes.

An engine only decides where a phase's tasks run: the local engine runs them one after another in
this process, the Ray engine (sweep/ray_engine.py) as Ray tasks. A failed task is retried up to
``retries`` times unless its error is bad input (exit 3); a point that still fails is recorded
with its error (its directory moved to ``<root>/failed/``) and never stops the others.
``<root>/sweep.json`` holds the rows, the merges (which point, into which, why) and the failures.

Progress (edgecompile.progress, as the build stages report theirs): one task counts finished points
(built, merged or failed), and each wave has its own task counting the phase's finished tasks.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from edgecompile import progress
from edgecompile.builddir.atomic import write_json
from edgecompile.config.recipe import Recipe, load_recipe
from edgecompile.config.resolve import resolve
from edgecompile.errors import EdgecompileError, InputError
from edgecompile.sweep.dedupe import explain, recipe_key
from edgecompile.sweep.grid import Grid, Resources, check_points, load_grid_spec, points
from edgecompile.sweep.point import export_key, run_phase

SWEEP_FILE = "sweep.json"
Task = tuple[str, tuple[str, str | None, str, list[str]]]  # (point name, run_phase arguments after the phase)


class Executor(Protocol):
    name: str

    def map(self, phase: str, tasks: list[Task], resources: Resources) -> Iterator[tuple[str, dict[str, Any]]]:
        """Run ``run_phase(phase, *args)`` for every task; yield (name, result) as each finishes."""


class LocalExecutor:
    """One task after another in this process (the default; needs nothing but edgecompile)."""

    name = "local"

    def map(self, phase: str, tasks: list[Task], resources: Resources) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, args in tasks:
            yield name, run_phase(phase, *args)


@dataclass
class _Point:
    name: str
    doc: dict[str, Any]
    recipe: Path
    model: str | None
    build_dir: Path
    stages: dict[str, dict[str, Any]]
    state: str = "pending"  # pending | failed | merged | done
    row: dict[str, Any] | None = None


def _stage_rows(stages: dict[str, dict[str, Any]]) -> tuple[list[str], list[str], dict[str, float]]:
    reused = [s for s, r in stages.items() if r["reused_from"]]
    skipped = [s for s, r in stages.items() if r["skipped"]]
    ran = {s: round(r["wall_s"], 2) for s, r in stages.items() if not r["skipped"]}
    return reused, skipped, ran


def _absorb(point: _Point, result: dict[str, Any]) -> None:
    """Keep, per stage, what the phase that first met it did (a later phase finds it current)."""
    for stage, info in result.get("stages", {}).items():
        point.stages.setdefault(stage, info)


def run_sweep(
    recipe_path: Path,
    grid_path: Path,
    root: Path,
    model: str | None,
    reuse_from: tuple[Path, ...] = (),
    on_point: Callable[[dict[str, Any]], None] | None = None,
    *,
    executor: Executor | None = None,
    retries: int = 1,
) -> list[dict[str, Any]]:
    """Build every grid point; one row per point (built, merged or failed), in grid order.

    A built row: name, build_dir, verdict, artifact_hash, metrics, reused/skipped/ran stages.
    A merged row: ``merged_into`` (the point whose artifact and report it shares) and ``why``.
    A failed row: ``error`` and ``exit_code``. ``on_point`` gets each row as its point finishes.
    """
    start = time.perf_counter()
    executor = executor or LocalExecutor()
    resolved = load_recipe(recipe_path)
    base = resolved.recipe.model_dump(mode="json", exclude_unset=True)
    grid: Grid = load_grid_spec(grid_path)
    check_points(grid_path, base, grid.axes)  # before anything is written under the sweep root
    root = root.resolve()
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "targets").mkdir(parents=True, exist_ok=True)
    model_axis = "model" in grid.axes
    pts: list[_Point] = []
    for name, doc in points(base, grid.axes):
        try:
            Recipe.model_validate(doc)
        except ValueError as exc:
            raise InputError(f"{grid_path}: point '{name}' is not a valid recipe: {exc}") from None
        target = Path(resolved.target_path) if doc["target"] == resolved.recipe.target else resolve("target", doc["target"], near=recipe_path)
        shutil.copyfile(target, root / "targets" / target.name)  # the repository layout rule finds it next to the recipe
        derived = root / "recipes" / f"{name}.yaml"
        derived.write_text(yaml.safe_dump(doc, sort_keys=False))
        point_model = doc.get("model") if model_axis else (model or doc.get("model"))
        pts.append(_Point(name, doc, derived, point_model, root / name, {}))
    by_name = {p.name: p for p in pts}
    rows: dict[str, dict[str, Any]] = {}
    merged: list[dict[str, Any]] = []
    user_reuse = [str(p.resolve()) for p in reuse_from]
    siblings = [str(p.build_dir) for p in pts]

    def finish(point: _Point, row: dict[str, Any]) -> None:
        point.row = row
        rows[point.name] = row
        finished.advance()
        if on_point is not None:
            on_point(row)

    def fail(point: _Point, result: dict[str, Any], phase: str) -> None:
        point.state = "failed"
        kept = None
        if point.build_dir.exists():
            kept = root / "failed" / point.name
            shutil.rmtree(kept, ignore_errors=True)
            kept.parent.mkdir(exist_ok=True)
            shutil.move(str(point.build_dir), kept)
            (kept / "error.txt").write_text(result["error"] + "\n")
        finish(point, {"name": point.name, "state": "failed", "phase": phase, "error": result["error"], "exit_code": result["exit_code"], "attempts": result.get("attempts", 1), "failed_dir": str(kept) if kept else None})

    def merge(point: _Point, into: _Point, level: str) -> None:
        why = explain(level, into.doc, point.doc, into.build_dir, point.build_dir if point.build_dir.exists() else None)
        point.state = "merged"
        shutil.rmtree(point.build_dir, ignore_errors=True)  # only copies of stages, or an artifact identical to the kept one
        entry = {"point": point.name, "into": into.name, "level": level, "why": why}
        merged.append(entry)
        finish(point, {"name": point.name, "state": "merged", "merged_into": into.name, "build_dir": str(into.build_dir), "level": level, "why": why})

    def merge_alike(group: list[_Point], key: Callable[[_Point], str], level: str) -> None:
        """Merge every pending point of ``group`` into the first pending one with the same ``key``."""
        owner: dict[str, _Point] = {}
        for p in group:
            if p.state != "pending":
                continue
            if key(p) in owner:
                merge(p, owner[key(p)], level)
            else:
                owner[key(p)] = p

    def wave(phase: str, group: list[_Point], reuse: list[str], on_done: Callable[[_Point, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
        """Run a phase for ``group`` with retries; returns the successful results by point name."""
        attempts = {p.name: 0 for p in group}
        pending = list(group)
        done: dict[str, dict[str, Any]] = {}
        with progress.task(f"sweep: {phase}", total=len(group)) as bar:
            while pending:
                tasks = [(p.name, (str(p.recipe), p.model, str(p.build_dir), reuse)) for p in pending]
                again = []
                for name, result in executor.map(phase, tasks, grid.resources_for(phase)):
                    point = by_name[name]
                    attempts[name] += 1
                    if result["ok"]:
                        _absorb(point, result)
                        done[name] = result
                        if on_done is not None:
                            on_done(point, result)
                    elif result.get("retryable") and attempts[name] <= retries:
                        again.append(point)
                        continue  # not finished: it runs again
                    else:
                        fail(point, {**result, "attempts": attempts[name]}, phase)
                    bar.advance()
                pending = again
        return done

    finished = progress.Task("sweep: points finished", len(pts))
    try:
        # 0. identical derived recipes: nothing to build twice.
        first_doc: dict[str, _Point] = {}
        for p in pts:
            key = recipe_key(p.doc) + f"\nmodel={p.model}"
            if key in first_doc:
                merge(p, first_doc[key], "recipe")
            else:
                first_doc[key] = p
        live = [p for p in pts if p.state == "pending"]

        # 1. one export per distinct export input.
        leaders: dict[str, _Point] = {}
        for p in live:
            try:
                key = export_key(str(p.recipe), p.model, str(p.build_dir))
            except EdgecompileError as exc:
                fail(p, {"error": str(exc), "exit_code": exc.exit_code}, "export")
                continue
            leaders.setdefault(key, p)
        prepared = wave("export", list(leaders.values()), [*user_reuse, *siblings])
        rest = [p for p in live if p.state == "pending" and p not in leaders.values()]
        prepared.update(wave("prepare", rest, [*user_reuse, *siblings]))

        # 2. same build inputs: build once.
        merge_alike(pts, lambda p: prepared[p.name]["build_fingerprint"], "build inputs")
        builders = [p for p in pts if p.state == "pending"]
        built = wave("build", builders, [*user_reuse, *siblings])

        # 3. byte-identical artifacts: validate and report once.
        merge_alike(builders, lambda p: built[p.name]["artifact_hash"], "artifact")
        def validated(p: _Point, result: dict[str, Any]) -> None:  # reported as each point finishes
            p.state = "done"
            reused, skipped, ran = _stage_rows(p.stages)
            finish(p, {"name": p.name, "state": "built", "build_dir": str(p.build_dir), "verdict": result["verdict"], "artifact_hash": result["artifact_hash"], "metrics": result["metrics"], "reused": reused, "skipped": skipped, "ran": ran})

        wave("validate", [p for p in pts if p.state == "pending"], [], validated)
    finally:
        finished.close()

    for entry in merged:  # a point merged into one that was merged later shares the final one's artifact
        into = entry["into"]
        while rows[into]["state"] == "merged":
            into = rows[into]["merged_into"]
        if into != entry["into"]:
            entry["into"] = rows[entry["point"]]["merged_into"] = into
            rows[entry["point"]]["build_dir"] = str(by_name[into].build_dir)
        if rows[into]["state"] == "failed":
            rows[entry["point"]]["merged_into_failed"] = True
    ordered = [rows[p.name] for p in pts]
    write_json(
        root / SWEEP_FILE,
        {
            "schema_version": 1,
            "engine": executor.name,
            "recipe": str(Path(recipe_path).resolve()),
            "grid": str(Path(grid_path).resolve()),
            "axes": grid.axes,
            "points": ordered,
            "merged": merged,
            "failed": [r for r in ordered if r["state"] == "failed"],
            "wall_s": round(time.perf_counter() - start, 2),
        },
    )
    return ordered
