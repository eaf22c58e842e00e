"""shapes-llava built for x86-cpu up to the build stage (fused GroupQueryAttention decoder), once per test process."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_CACHE: dict[str, object] = {}


def built_shapes_llava(factory):  # noqa: ANN001, ANN201 - pytest's TempPathFactory -> BuildContext
    """The shipped x86-cpu recipe with 8 calibration/eval samples (the build's speed), run up to build."""
    if "ctx" not in _CACHE:
        from edgecompile.stages.context import BuildContext
        from edgecompile.stages.pipeline import run_until

        root = factory.mktemp("shapes-llava-x86")
        text = re.sub(r"(\n  samples:) \d+", r"\1 8", (REPO / "recipes" / "x86-cpu.yaml").read_text())
        (root / "recipes").mkdir()
        shutil.copytree(REPO / "targets", root / "targets")
        recipe = root / "recipes" / "x86-cpu.yaml"
        recipe.write_text(text)
        ctx = BuildContext.create(recipe, "shapes-llava", root / "build")
        run_until(ctx, "build")
        _CACHE["ctx"] = ctx
    return _CACHE["ctx"]
