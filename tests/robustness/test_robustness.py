"""RS and mCE on a labelled eval set, for the artifact and the reference of a tiny CLIP build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompile.errors import InputError
from edgecompile.robustness.build import robustness_path, run_robustness
from edgecompile.robustness.robustness import summarize
from edgecompile.stages.context import BuildContext
from edgecompile.data.sources import eval_data

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    label: str
    text: str = ""


@dataclass(frozen=True)
class Labelled:
    samples: list[Sample]
    prompts: list[str]
    class_names: list[str]


def _labelled(n: int = 6) -> Labelled:
    rng = np.random.default_rng(0)
    names = list(COLORS)
    samples = []
    for i in range(n):
        name = names[i % 3]
        pixels = np.clip(np.array(COLORS[name]) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        samples.append(Sample(Image.fromarray(pixels), name))
    return Labelled(samples, [f"a photo of {c}" for c in names], names)


def test_summary_formulas() -> None:
    s = summarize(0.8, {"fog": {"1": 0.6, "2": 0.4}, "contrast": {"1": 0.8, "2": 0.2}})
    assert s["mean_corrupted"] == pytest.approx(0.5)
    assert s["rs"] == pytest.approx(0.5 / 0.8)
    assert s["mce"] == pytest.approx(0.3)


def test_build_robustness_artifact_and_reference(built: Path) -> None:
    ctx = BuildContext.open(built)
    result = run_robustness(ctx, ("gaussian_noise", "contrast"), (1, 5), None, eval_set=_labelled())
    assert robustness_path(built).is_file()
    for who in ("artifact", "reference"):
        r = result[who]
        assert 0.0 <= r["clean"] <= 1.0
        values = [v for per in r["accuracy"].values() for v in per.values()]
        assert len(values) == 4 and all(0.0 <= v <= 1.0 for v in values)
        assert r["mce"] == pytest.approx(r["clean"] - np.mean(values))
        if r["clean"] > 0:
            assert r["rs"] == pytest.approx(np.mean(values) / r["clean"])


def test_unlabelled_eval_set_is_an_input_error(built: Path) -> None:
    ctx = BuildContext.open(built)
    with pytest.raises(InputError, match="labelled"):
        run_robustness(ctx, ("fog",), (1,), 2, eval_set=eval_data("synthetic", 2))


def test_normalised_ce_sees_a_collapsed_model_that_mce_calls_robust() -> None:
    from edgecompile.robustness.robustness import normalised_ce

    reference = {"fog": {"1": 0.8, "3": 0.6}, "noise": {"1": 0.9, "3": 1.0}}
    collapsed = {"fog": {"1": 0.35, "3": 0.33}, "noise": {"1": 0.4, "3": 0.4}}  # clean 0.4: little left to drop
    mce_ref = summarize(0.9, reference)["mce"]
    mce_collapsed = summarize(0.4, collapsed)["mce"]
    assert mce_collapsed < mce_ref  # the seed's mCE ranks the collapsed model as more robust
    ce = normalised_ce(collapsed, reference)
    assert ce["ce_per_corruption"]["fog"] == pytest.approx((0.65 + 0.67) / (0.2 + 0.4))
    assert ce["ce_per_corruption"]["noise"] == pytest.approx(1.2 / 0.1)
    assert ce["ce_normalised"] > 1.0 and ce["ce_undefined"] == []
    assert normalised_ce(reference, reference)["ce_normalised"] == pytest.approx(1.0)
    perfect = {"fog": {"1": 1.0}}
    assert normalised_ce(perfect, perfect) == {"ce_normalised": None, "ce_per_corruption": {}, "ce_undefined": ["fog"]}
