"""What a wheel user meets: init, listings that say where each recipe comes from, the Python API."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecompile.cli.main import main


def test_init_writes_an_editable_recipe_that_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init", "--target", "arm64-cpu", "--name", "my-pi"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "recipes" / "my-pi.yaml").is_file() and (tmp_path / "targets" / "arm64-cpu.yaml").is_file()
    from edgecompile.config.recipe import load_recipe
    from edgecompile.config.resolve import resolve

    resolved = load_recipe(resolve("recipe", "my-pi"))
    assert resolved.recipe.name == "my-pi" and resolved.target.name == "arm64-cpu"
    assert Path(resolved.target_path) == (tmp_path / "targets" / "arm64-cpu.yaml").resolve()
    listing = CliRunner().invoke(main, ["recipes"])
    assert any(line.startswith("my-pi ") and " project " in line for line in listing.output.splitlines()), listing.output
    assert any(line.startswith("x86-cpu ") and " shipped " in line for line in listing.output.splitlines())
    again = CliRunner().invoke(main, ["init", "--target", "arm64-cpu", "--name", "my-pi"])
    assert again.exit_code == 3 and "never overwrites" in again.output
    bad = CliRunner().invoke(main, ["init", "--target", "nope"])
    assert bad.exit_code == 3 and "unknown target 'nope'" in bad.output


def test_user_config_folder_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecompile.config.resolve import resolve, search_dirs

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cfg" / "edgecompile" / "calibration_sets"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("x")
    assert folder.resolve() in search_dirs("calibration_set")
    assert resolve("calibration_set", "mine") == (folder / "mine.yaml").resolve()


def test_python_api_reads_a_build(tiny_build: Path) -> None:
    import edgecompile

    result = edgecompile.load_report(tiny_build)
    assert result.verdict in ("pass", "fail", "pending") and result.gates and "drift.vision_encoder.image_embeds.cosine_mean" in result.metrics
    assert result.artifacts["vision_encoder"].is_file()
    assert result.exit_code in (0, 1, 6)
    from edgecompile.errors import InputError

    with pytest.raises(InputError, match="no report.json"):
        edgecompile.load_report(tiny_build.parent)


def test_import_edgecompile_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, edgecompile; assert 'torch' not in sys.modules, 'torch imported'; print(edgecompile.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_reader_that_stops_early_is_not_an_internal_error(capfd: pytest.CaptureFixture[str]) -> None:
    """`edgecompile recipes | head` used to end in a BrokenPipeError traceback and exit 70."""
    from edgecompile.cli.common import handle_errors

    @handle_errors
    def listing() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(SystemExit) as info:
        listing()
    assert info.value.code == 0
    assert "internal error" not in capfd.readouterr().err
