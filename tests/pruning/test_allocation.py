"""QUOTA's keep-ratio allocation: sums, monotonicity, sensitivity ordering, budgets, recipe JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecompile.pruning.allocation import (
    KeepSchedule,
    SensitivityAccumulator,
    allocate_keep_schedule,
    layer_sensitivity,
    normalize_sensitivity,
    uniform_keep_schedule,
)
from edgecompile.pruning.score import DEFAULT_WEIGHTS

LAYERS = (2, 3, 4, 5, 6, 7)
SENS = (0.05, 0.40, 0.10, 0.90, 0.20, 0.60)


def _drops(schedule: KeepSchedule) -> np.ndarray:
    return -np.diff(np.concatenate([[1.0], schedule.keep_ratios]))


def test_layer_sensitivity_is_relative_deviation():
    a = np.array([3.0, 4.0])
    assert layer_sensitivity(a, a) == 0.0
    assert layer_sensitivity(a, np.zeros(2)) == pytest.approx(1.0, abs=1e-6)
    assert layer_sensitivity(a, a + np.array([0.5, 0.0])) == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="lowbit_acts"):
        layer_sensitivity(a, np.zeros(3))


def test_accumulator_equals_direct_mean():
    rng = np.random.default_rng(0)
    acc = SensitivityAccumulator([3, 4])
    direct: dict[int, list[float]] = {3: [], 4: []}
    for _ in range(20):
        for layer in (3, 4):
            fa = rng.normal(size=(5, 8))
            la = fa + rng.normal(scale=0.1 * layer, size=fa.shape)
            acc.add(layer, fa, la)
            direct[layer].append(layer_sensitivity(fa, la))
    np.testing.assert_allclose(acc.values(), [np.mean(direct[3]), np.mean(direct[4])], rtol=1e-12)
    assert acc.counts() == {3: 20, 4: 20}
    assert set(vars(acc)) == {"layers", "eps", "_sum", "_count"}  # running sums only


def test_accumulator_refuses_unknown_and_empty_layers():
    acc = SensitivityAccumulator([1, 2])
    with pytest.raises(ValueError, match="layer"):
        acc.add(9, np.ones(2), np.ones(2))
    acc.add(1, np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match=r"no samples recorded for \[2\]"):
        acc.values()


def test_normalize_sensitivity_range_and_constant():
    s = normalize_sensitivity([0.0, 1.0, 2.0, 3.0, 100.0])
    assert s.min() == 0.0 and s.max() == 1.0
    assert s[-1] == s[-2] or s[-1] == 1.0  # the outlier is capped at p90
    const = normalize_sensitivity([0.3, 0.3, 0.3])
    assert not np.isnan(const).any() and np.all(const == const[0])


def test_schedule_sums_monotone_final_keep():
    sched = allocate_keep_schedule(SENS, LAYERS, final_keep=0.3, floor=0.1, temperature=0.5)
    rho = np.array(sched.keep_ratios)
    assert sched.layers == LAYERS
    assert np.all(np.diff(rho) <= 0)
    assert rho[-1] == 0.3
    assert np.all(rho >= 0.1) and np.all(rho <= 1.0)
    assert _drops(sched).sum() == pytest.approx(0.7, abs=1e-12)
    assert sched.sensitivity == SENS
    assert sched.inputs == {"method": "quota", "final_keep": 0.3, "floor": 0.1, "temperature": 0.5}


def test_less_sensitive_layers_drop_more():
    sched = allocate_keep_schedule(SENS, LAYERS, final_keep=0.3, floor=0.1, temperature=0.5)
    drops = _drops(sched)
    order_sens = np.argsort(SENS)
    assert np.all(np.diff(drops[order_sens]) <= 1e-12)  # drop decreases as sensitivity grows
    assert drops[np.argmin(SENS)] > drops[np.argmax(SENS)] * 1.5


def test_large_temperature_is_near_uniform():
    hot = allocate_keep_schedule(SENS, LAYERS, final_keep=0.3, floor=0.1, temperature=1e4)
    uni = uniform_keep_schedule(LAYERS, final_keep=0.3)
    np.testing.assert_allclose(hot.keep_ratios, uni.keep_ratios, atol=1e-4)
    np.testing.assert_allclose(_drops(uni), 0.7 / len(LAYERS), atol=1e-12)
    assert uni.inputs["method"] == "uniform" and uni.sensitivity == ()


def test_keep_one_keeps_everything():
    sched = allocate_keep_schedule(SENS, LAYERS, final_keep=1.0, floor=0.1, temperature=1.0)
    assert sched.keep_ratios == (1.0,) * len(LAYERS)
    assert sched.budgets(576) == (576,) * len(LAYERS)


def test_budgets_ceil_and_clip():
    sched = KeepSchedule((2, 3, 4), (0.75, 0.3, 0.001), reference_visual_tokens=10)
    assert sched.budgets() == (8, 3, 1)  # ceil(7.5)=8; 0.3*10 stays 3 despite float drift; >= 1
    assert sched.budgets(576) == (432, 173, 1)
    with pytest.raises(ValueError, match="n_visual"):
        KeepSchedule((2,), (0.5,)).budgets()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"final_keep": 0.0}, "final_keep"),
        ({"final_keep": 1.2}, "final_keep"),
        ({"floor": 0.5}, "floor"),
        ({"temperature": 0.0}, "temperature"),
        ({"candidate_layers": ()}, "candidate_layers"),
        ({"candidate_layers": (2, 4, 3, 5, 6, 7)}, "candidate_layers"),
        ({"candidate_layers": (2, 3, 3, 5, 6, 7)}, "candidate_layers"),
        ({"sensitivity": (0.1, 0.2)}, "sensitivity"),
    ],
)
def test_allocation_refusals_name_the_field(kwargs, field):
    args = {"sensitivity": SENS, "candidate_layers": LAYERS, "final_keep": 0.3, "floor": 0.1, "temperature": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}:"):
        allocate_keep_schedule(**args)


def test_json_round_trip(tmp_path):
    sched = allocate_keep_schedule(
        SENS, LAYERS, 0.3, 0.1, 0.5, reference_visual_tokens=576, weights=DEFAULT_WEIGHTS
    )
    assert sched.inputs["weights"] == DEFAULT_WEIGHTS
    path = tmp_path / "keep.json"
    sched.to_json(path)
    back = KeepSchedule.from_json(path)
    assert back == sched
    assert KeepSchedule.from_json(json.loads(path.read_text())) == sched
    assert back.budgets() == sched.budgets()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"extra": 1}, "extra"),
        ({"layers": [2.0, 3.0]}, "layers"),
        ({"keep_ratios": ["0.5", 0.3]}, "keep_ratios"),
        ({"keep_ratios": [0.3, 0.5]}, "keep_ratios"),
        ({"keep_ratios": [0.5]}, "keep_ratios"),
        ({"reference_visual_tokens": "576"}, "reference_visual_tokens"),
        ({"reference_visual_tokens": True}, "reference_visual_tokens"),
        ({"sensitivity": [0.1, None]}, "sensitivity"),
        ({"inputs": []}, "inputs"),
        ({"inputs": {"temprature": 1.0}}, "inputs.temprature"),
        ({"inputs": {"floor": "0.1"}}, "inputs.floor"),
    ],
)
def test_from_json_strict(patch, field):
    data = {"layers": [2, 3], "keep_ratios": [0.5, 0.3], "reference_visual_tokens": 576, "sensitivity": [0.1, 0.2], "inputs": {}}
    assert KeepSchedule.from_json(data).budgets() == (288, 173)
    data.update(patch)
    with pytest.raises(ValueError, match=f"^{field}:"):
        KeepSchedule.from_json(data)


def test_from_json_missing_key():
    with pytest.raises(ValueError, match="^keep_ratios: missing"):
        KeepSchedule.from_json({"layers": [2]})
