"""The bundled shapes-clip / shapes-llava built with the shipped recipes, made smaller, once per session.

Smaller means fewer eval and calibration samples and latency runs; the targets, precisions and
gates are the shipped ones, so the verdicts are the shipped recipes' verdicts.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_CACHE: dict[tuple[str, str], Path] = {}


def small_recipe(folder: Path, recipe: str) -> Path:
    text = (REPO / "recipes" / f"{recipe}.yaml").read_text()
    text = re.sub(r"(\n  samples:) \d+", r"\1 24", text)  # calibration and eval
    text = re.sub(r"latency_runs: \d+", "latency_runs: 3", text)
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    if not (folder / "targets").exists():
        shutil.copytree(REPO / "targets", folder / "targets")
    path = folder / "recipes" / f"{recipe}.yaml"
    path.write_text(text)
    return path


def shapes_build(factory, recipe: str, model: str = "shapes-clip") -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """Build ``model`` with the (smaller) shipped ``recipe`` once; return the build directory."""
    key = (recipe, model)
    if key not in _CACHE:
        from edgecompile.stages.context import BuildContext
        from edgecompile.stages.pipeline import run_until
        from edgecompile.stages.validate import publish_report

        root = factory.mktemp(f"{model}-{recipe}")
        ctx = BuildContext.create(small_recipe(root, recipe), model, root / "build")
        run_until(ctx, "validate")
        publish_report(ctx)
        _CACHE[key] = ctx.build_dir
    return _CACHE[key]
