"""One tiny CLIP build shared by the validation, robustness and reports tests (built once per process)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tiny_models import save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
RECIPE = """schema_version: 1
name: {name}
target: x86-cpu
precision_preset: w8a8
calibration: {{set: synthetic, samples: 8}}
eval: {{set: synthetic, samples: 8, latency_runs: 3, warmup_runs: 0}}
comparison: {{max_iterations: 4, layer_samples: 2}}
gates:
  - {{name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.5}}
"""
_CACHE: dict[str, Path] = {}


def write_recipe(root: Path, name: str = "tiny", text: str | None = None) -> Path:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "targets").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "targets" / "x86-cpu.yaml", root / "targets" / "x86-cpu.yaml")
    path = root / "recipes" / f"{name}.yaml"
    path.write_text(text if text is not None else RECIPE.format(name=name))
    return path


def tiny_build(factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """Build the tiny CLIP recipe once (export -> validate) and return its build directory."""
    if "build" not in _CACHE:
        from edgecompile.stages.context import BuildContext
        from edgecompile.stages.pipeline import run_until
        from edgecompile.stages.validate import publish_report

        root = factory.mktemp("tiny-build")
        model = save_tiny_clip(root / "clip")
        ctx = BuildContext.create(write_recipe(root), str(model), root / "build")
        run_until(ctx, "validate")
        publish_report(ctx)
        _CACHE["build"] = ctx.build_dir
        _CACHE["model"] = model
    return _CACHE["build"]


def tiny_model() -> Path:
    return _CACHE["model"]
