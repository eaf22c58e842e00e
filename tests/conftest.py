"""Shared fixtures: tiny real checkpoints and one full tiny build, made once per test session."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from tiny_models import save_tiny_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

TINY_RECIPE = """schema_version: 1
name: {name}
target: x86-cpu
calibration: {{method: {method}, set: synthetic, samples: 8}}
eval: {{set: synthetic, samples: 16, latency_runs: 5, warmup_runs: 1}}
gates:
  - {{name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: {min_cosine}}}
"""


def write_recipe(folder: Path, name: str = "tiny", method: str = "minmax", min_cosine: float = 0.9, extra: str = "") -> Path:
    """A recipe in ``folder/recipes`` with the repository's targets beside it."""
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    targets = folder / "targets"
    if not targets.exists():
        shutil.copytree(REPO / "targets", targets)
    path = folder / "recipes" / f"{name}.yaml"
    path.write_text(TINY_RECIPE.format(name=name, method=method, min_cosine=min_cosine) + extra)
    return path


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, tiny_clip: Path) -> Path:
    """A complete build directory of the tiny CLIP for x86-cpu (export..validate)."""
    from edgecompile.stages.context import BuildContext
    from edgecompile.stages.pipeline import run_until

    root = tmp_path_factory.mktemp("tiny-build")
    ctx = BuildContext.create(write_recipe(root), str(tiny_clip), root / "build")
    run_until(ctx, "validate")
    return ctx.build_dir


@pytest.fixture
def build_copy(tiny_build: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny build (its recipe included) for tests that change things."""
    import json

    root = tmp_path / "copy"
    shutil.copytree(tiny_build.parent, root)
    record = json.loads((root / "build" / "build.json").read_text())
    record["recipe"] = str(root / "recipes" / "tiny.yaml")
    (root / "build" / "build.json").write_text(json.dumps(record))
    return root / "build"
