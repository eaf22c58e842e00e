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
# The hash cache (builddir/hashing.py) must not write into the user's ~/.cache from the suite.
if "EDGECOMPILE_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["EDGECOMPILE_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgecompile-test-cache-")

from recipe_files import write_recipe  # noqa: E402
from tiny_models import save_tiny_clip  # noqa: E402


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
    try:
        run_until(ctx, "validate")
    finally:
        ctx.close()  # do not hold the build directory's lock for the whole session
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
