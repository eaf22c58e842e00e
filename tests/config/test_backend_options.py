"""backend_options are validated against each backend's schema at recipe load: a typo is a file:line error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgecompile.config.recipe import load_recipe
from edgecompile.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, shipped: str, extra: str) -> Path:
    (tmp_path / "recipes").mkdir()
    shutil.copytree(REPO / "targets", tmp_path / "targets")
    text = (REPO / "recipes" / f"{shipped}.yaml").read_text()
    text = text.split("backend_options:")[0] + extra
    path = tmp_path / "recipes" / f"{shipped}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("shipped", "options", "field"),
    [
        ("jetson-orin-nano", "backend_options:\n  trt_profil: {batch: [1, 1, 8]}\n", "backend_options.trt_profil"),
        ("jetson-orin-nano", "backend_options:\n  trt_profile: {batch: [1, 8]}\n", "backend_options.trt_profile.batch"),
        ("apple-m2", "backend_options:\n  coreml_palettize_bits: 5\n", "backend_options.coreml_palettize_bits"),
        ("snapdragon-8-gen-3", "backend_options:\n  allow_cpu_fallbak: true\n", "backend_options.allow_cpu_fallbak"),
        ("x86-cpu", "backend_options:\n  threads: 4\n", "backend_options.threads"),
    ],
)
def test_unknown_or_bad_options_are_refused_with_file_line_field(tmp_path: Path, shipped: str, options: str, field: str) -> None:
    path = _recipe(tmp_path, shipped, options)
    with pytest.raises(InputError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"{shipped}.yaml:" in message and field in message, message


def test_every_shipped_recipe_has_valid_options() -> None:
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        load_recipe(path)
