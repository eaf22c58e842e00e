"""No pickle ever: a checkpoint whose weights are not safetensors is refused before any loader runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompile.cli.main import main
from recipe_files import write_recipe


@pytest.mark.parametrize("pickled", ["pytorch_model.bin", "model.pt", "weights.pth", "model.ckpt"])
def test_pickled_weights_are_refused_with_a_hint(tmp_path: Path, tiny_clip: Path, pickled: str) -> None:
    model = tmp_path / "pickled"
    shutil.copytree(tiny_clip, model)
    (model / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    # A pickle that would create a file if anything loaded it.
    (model / pickled).write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["build", "--recipe", str(write_recipe(tmp_path)), "--model", str(model), "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "pickle" in result.output and pickled in result.output and "safetensors" in result.output
    assert not marker.exists() and not out.exists()


def test_a_directory_without_weights_is_refused(tmp_path: Path, tiny_clip: Path) -> None:
    model = tmp_path / "empty"
    model.mkdir()
    shutil.copy(tiny_clip / "config.json", model / "config.json")
    result = CliRunner().invoke(main, ["export", "--recipe", str(write_recipe(tmp_path)), "--model", str(model), "--out", str(tmp_path / "b")])
    assert result.exit_code == 3 and "no *.safetensors weights" in result.output, result.output
