"""The registry lists bundled models with their cards; `zoo` prints them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edgecompile.cli_zoo import zoo
from edgecompile.zoo import DEFAULT_DUAL_ENCODER, DEFAULT_GENERATIVE, list_models, model_path


def test_list_models_reads_cards():
    models = {m.name: m for m in list_models()}
    assert DEFAULT_DUAL_ENCODER in models
    clip = models[DEFAULT_DUAL_ENCODER]
    assert clip.kind == "dual_encoder" and clip.card.parameters > 100_000
    if DEFAULT_GENERATIVE in models:
        assert models[DEFAULT_GENERATIVE].kind == "generative"
    total = sum((m.path / "model.safetensors").stat().st_size for m in models.values())
    assert total < 60 * 2**20


def test_model_path_errors():
    with pytest.raises(KeyError, match="expected one of shapes-clip"):
        model_path("gpt-5")


def test_zoo_command_prints_table():
    result = CliRunner().invoke(zoo, [])
    assert result.exit_code == 0, result.output
    assert DEFAULT_DUAL_ENCODER in result.output and "accuracy" in result.output
    assert CliRunner().invoke(zoo, ["--help"]).exit_code == 0
    assert "shapes-clip" in CliRunner().invoke(zoo, ["--paths"]).output
