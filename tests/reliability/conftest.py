"""Fixtures of the bad-input and fault battery (helpers are in battery.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from battery import SHAPES_CLIP


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled shapes-clip checkpoint to damage."""
    dest = tmp_path / "model"
    shutil.copytree(SHAPES_CLIP, dest)
    return dest
