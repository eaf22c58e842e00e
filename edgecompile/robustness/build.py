"""Robustness of one build directory: artifact and reference, written to ``robustness/robustness.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecompile.runtime.onnx_cpu import cpu_runner
from edgecompile.backends.registry import get_backend
from edgecompile.builddir.atomic import staged_directory, write_json
from edgecompile.errors import BackendUnavailable
from edgecompile.robustness.robustness import evaluate_robustness, limit_samples
from edgecompile.data.sources import eval_data
from edgecompile.models.resolve import is_bundled
from edgecompile.stages.context import BuildContext
from edgecompile.stages.pipeline import recorded

ROBUSTNESS_DIR = "robustness"
ROBUSTNESS_FILE = "robustness.json"


def run_robustness(ctx: BuildContext, corruptions: tuple[str, ...], severities: tuple[int, ...], samples: int | None, seed: int = 0, eval_set: Any = None, progress: Any = None) -> dict[str, Any]:
    built = recorded(ctx, "build").output
    artifact_dir, artifact = built.folder, built.artifact
    if not artifact.runs_here:
        raise BackendUnavailable(f"the {artifact.backend} artifact cannot execute on this machine; run 'edgecompile robustness' on the device")
    export = recorded(ctx, "export").output
    exported = {c: p.name for c, p in export.files.items()}
    runners = {
        "artifact": get_backend(artifact.backend).runner(artifact_dir, artifact),
        "reference": cpu_runner(export.folder, exported),
    }
    data = eval_set if eval_set is not None else eval_data(
        ctx.recipe.eval.set, samples or ctx.recipe.eval.samples, ctx.adapter.family, bundled=is_bundled(ctx.model_dir), near=Path(ctx.resolved.recipe_path)
    )
    result = evaluate_robustness(ctx.adapter, ctx.loaded(), runners, limit_samples(data, samples), corruptions, severities, seed, progress)
    result["recipe"] = ctx.recipe.name
    with staged_directory(ctx.path(ROBUSTNESS_DIR)) as out:
        write_json(out / ROBUSTNESS_FILE, result)
    return result


def robustness_path(build_dir: Path) -> Path:
    return build_dir / ROBUSTNESS_DIR / ROBUSTNESS_FILE
