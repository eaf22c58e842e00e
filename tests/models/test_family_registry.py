"""The registry: every issue-22 family resolves to its adapter; known-but-unsupported families are refused with the nearest one named."""

from __future__ import annotations

import json

import pytest

from edgecompile.errors import InputError
from edgecompile.models.registry import adapter_for, supported_model_types


def test_new_families_are_registered() -> None:
    assert {"siglip2", "llava_next", "llava_onevision", "idefics3", "paligemma", "qwen2_vl", "qwen2_5_vl"} <= set(supported_model_types())


@pytest.mark.parametrize(("model_type", "names"), [("smolvlm", ("SmolVLM2", "idefics3")), ("gemma3", ("Gemma 3", "paligemma")), ("idefics2", ("Idefics2", "idefics3"))])
def test_unsupported_family_names_the_nearest(tmp_path, model_type, names) -> None:  # noqa: ANN001
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(InputError) as err:
        adapter_for(tmp_path)
    message = str(err.value)
    assert f"'{model_type}'" in message and "not supported yet" in message and all(n in message for n in names)
    assert int(err.value.exit_code) == 3


def test_unknown_model_type_lists_the_supported(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="'bert' is not supported; expected one of .*qwen2_vl"):
        adapter_for(tmp_path)
