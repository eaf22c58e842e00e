"""Robustness of every built point of a sweep, with one float reference per distinct export.

    python -m edgecompile.robustness.sweep build/seed-002 [ROOT ...] [--samples N] [--point GLOB ...]

Why not ``edgecompile robustness`` once per point: every point of a seed-002 grid exports the same
model, so its FP32 reference, the corrupted images and the reference's accuracy on them are the
same for all points. Scoring them once per (export, eval set) and then only each point's artifact
halves the work of a 10 corruptions x 5 severities run. The numbers written to each point's
``robustness/robustness.json`` are those ``edgecompile robustness`` computes (same corruption
seeds, same eval set, same formulas); ``reference_shared_with`` names the points that share the
reference. Severities default to all five (seed 002's protocol) and are validated strictly.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecompile.builddir.atomic import staged_directory, write_json
from edgecompile.errors import EdgecompileError, InputError
from edgecompile.robustness.build import ROBUSTNESS_DIR, ROBUSTNESS_FILE
from edgecompile.robustness.corruptions import CORRUPTIONS, SEVERITIES
from edgecompile.robustness.robustness import assemble, check_labelled, check_protocol, corrupted_set, limit_samples


def built_points(root: Path, patterns: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """(name, build dir) of every point the sweep built (merged points share their keeper's),
    only those matching one of ``patterns`` (shell globs on the point name) when any are given."""
    path = root / "sweep.json"
    if not path.is_file():
        raise InputError(f"{root}: no sweep.json; run 'edgecompile sweep --out {root} ...' first")
    doc = json.loads(path.read_text())
    built = [(p["name"], Path(p["build_dir"])) for p in doc.get("points", []) if p.get("state") == "built"]
    return [(n, d) for n, d in built if not patterns or any(fnmatch.fnmatchcase(n, g) for g in patterns)]


def eval_fingerprint(eval_set: Any) -> str:
    """Hash of the eval set's pixels, labels, prompts and classes: points agree on it or do not share."""
    h = hashlib.sha256()
    for s in eval_set.samples:
        h.update(np.asarray(s.image.convert("RGB")).tobytes())
        h.update(str(s.label).encode())
    h.update(json.dumps([list(eval_set.prompts), list(eval_set.class_names)]).encode())
    return h.hexdigest()


def _open(build_dir: Path, samples: int | None) -> dict[str, Any]:
    from edgecompile.backends.registry import get_backend
    from edgecompile.data.sources import eval_data
    from edgecompile.errors import BackendUnavailable
    from edgecompile.models.resolve import is_bundled
    from edgecompile.runtime.onnx_cpu import cpu_runner
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import recorded

    ctx = BuildContext.open(build_dir)
    built = recorded(ctx, "build").output
    if not built.artifact.runs_here:
        raise BackendUnavailable(f"{build_dir}: the {built.artifact.backend} artifact cannot execute on this machine")
    export = recorded(ctx, "export").output
    data = eval_data(ctx.recipe.eval.set, samples or ctx.recipe.eval.samples, ctx.adapter.family, bundled=is_bundled(ctx.model_dir), near=Path(ctx.resolved.recipe_path))
    data = limit_samples(data, samples)
    return {
        "ctx": ctx,
        "artifact": get_backend(built.artifact.backend).runner(built.folder, built.artifact),
        "reference": lambda: cpu_runner(export.folder, {c: p.name for c, p in export.files.items()}),
        "export_key": json.dumps(ctx.manifest().stages["export"].outputs, sort_keys=True),
        "eval_set": data,
    }


def run_sweep_robustness(roots: Path | list[Path], corruptions: tuple[str, ...] = CORRUPTIONS, severities: tuple[int, ...] = SEVERITIES, samples: int | None = None, seed: int = 0, log: Any = print, patterns: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Write ``robustness/robustness.json`` into every built point (matching ``patterns``) of the
    sweeps at ``roots`` (a build directory stands for itself); points of several sweeps of one
    model share one reference too. Needs only the export and build stages, not validate."""
    from edgecompile.reports.build_report import refresh_build_reports

    corruptions, severities = check_protocol(corruptions, severities)
    roots = [roots] if isinstance(roots, Path) else list(roots)
    found = [pt for root in roots for pt in (built_points(root, patterns) if not (root / "build.json").is_file() else [(root.name, root)])]
    names = [n for n, _ in found]
    if len(set(names)) != len(names):
        raise InputError(f"{', '.join(map(str, roots))}: point names repeat across the sweeps ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    points = {name: _open(d, samples) for name, d in found}
    for p in points.values():
        check_labelled(p["eval_set"])
    if not points:
        raise InputError(f"{', '.join(f'{r}/sweep.json' for r in roots)}: no built point to measure" + (f" matching {', '.join(patterns)}" if patterns else ""))
    groups: dict[tuple[str, str], list[str]] = {}
    for name, p in points.items():
        groups.setdefault((p["export_key"], eval_fingerprint(p["eval_set"])), []).append(name)
    results: dict[str, dict[str, Any]] = {}
    for names in groups.values():
        start = time.perf_counter()
        lead = points[names[0]]
        adapter, loaded, eval_set = lead["ctx"].adapter, lead["ctx"].loaded(), lead["eval_set"]
        runners = {"reference": lead["reference"](), **{n: points[n]["artifact"] for n in names}}
        clean = {who: float(adapter.evaluate(loaded, run, eval_set)[0]["accuracy"]) for who, run in runners.items()}
        accuracy: dict[str, dict[str, dict[str, float]]] = {who: {} for who in runners}
        for corruption in corruptions:
            for severity in severities:
                shifted = corrupted_set(eval_set, corruption, severity, seed)
                for who, run in runners.items():
                    accuracy[who].setdefault(corruption, {})[str(severity)] = float(adapter.evaluate(loaded, run, shifted)[0]["accuracy"])
                log(f"  {corruption:<17} s{severity}: reference {accuracy['reference'][corruption][str(severity)]:.3f} | {time.perf_counter() - start:.0f}s")
        for n in names:
            result = assemble({"artifact": clean[n], "reference": clean["reference"]}, {"artifact": accuracy[n], "reference": accuracy["reference"]}, corruptions, severities, len(eval_set.samples), seed)
            result["recipe"] = points[n]["ctx"].recipe.name
            result["reference_shared_with"] = [m for m in names if m != n]
            with staged_directory(points[n]["ctx"].path(ROBUSTNESS_DIR)) as out:
                write_json(out / ROBUSTNESS_FILE, result)
            if (points[n]["ctx"].build_dir / "report.json").is_file():  # validated already (else 'edgecompile report' refreshes it)
                refresh_build_reports(points[n]["ctx"].build_dir)
            results[n] = result
            a = result["artifact"]
            log(f"{n}: clean {a['clean']:.3f}  RS {a['rs']:.3f}  mCE {a['mce']:.3f}  CE {a['ce_normalised']:.3f}")
        log(f"{len(names)} point(s) sharing one reference: {time.perf_counter() - start:.0f}s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", type=Path, nargs="+", help="sweep root(s) (with sweep.json) or build directories (with build.json)")
    parser.add_argument("--point", action="append", dest="patterns", default=[], help="only points whose name matches this glob (repeatable)")
    parser.add_argument("--samples", type=int, default=None, help="first N eval samples (default: each recipe's eval.samples)")
    parser.add_argument("--severity", type=int, action="append", dest="severities", help="severity 1-5 (repeatable; default: all five)")
    parser.add_argument("--corruption", action="append", dest="corruptions", help="corruption (repeatable; default: all ten)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error("--samples: expected a positive integer")
    try:
        run_sweep_robustness(args.roots, tuple(args.corruptions or CORRUPTIONS), tuple(args.severities or SEVERITIES), args.samples, args.seed, patterns=tuple(args.patterns))
    except EdgecompileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
