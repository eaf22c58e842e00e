"""Shared fixtures for backend tests: one tiny CLIP, and recipes written beside copies of the real targets."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("models") / "clip")


def write_recipe(root: Path, target: str, text: str, name: str) -> Path:
    """A recipe in ``root/recipes`` with the shipped target copied to ``root/targets``."""
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "targets").mkdir(exist_ok=True)
    shutil.copyfile(REPO / "targets" / f"{target}.yaml", root / "targets" / f"{target}.yaml")
    path = root / "recipes" / f"{name}.yaml"
    path.write_text(f"schema_version: 1\nname: {name}\ntarget: {target}\n" + text)
    return path
