"""Validate runs graphs only: the torch weights are let go before the reference runs, cached plain values kept."""

from __future__ import annotations

from pathlib import Path

import torch

from edgecompile.models.adapter import LoadedModel
from edgecompile.stages.validate import _without_weights


def test_the_view_keeps_processor_config_and_plain_caches_but_no_module() -> None:
    model = torch.nn.Linear(4, 4)
    loaded = LoadedModel(path=Path("m"), model=model, processor="proc", config={"hidden": 4})
    loaded._anyres_tokens = 576  # type: ignore[attr-defined]  # an adapter's cached token count
    loaded._llava_vision = torch.nn.Sequential(model)  # type: ignore[attr-defined]  # a cached piece of the weights
    view = _without_weights(loaded)
    assert view.model is None and view.processor == "proc" and view.config == {"hidden": 4} and view.path == Path("m")
    assert view._anyres_tokens == 576  # type: ignore[attr-defined]
    assert not hasattr(view, "_llava_vision")
    assert not any(isinstance(v, torch.nn.Module) for v in vars(view).values())
