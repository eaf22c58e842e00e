"""Seed 002's robustness protocol (10 corruptions x severities 1-5), validated strictly, and the
sweep driver that shares one float reference between points: same numbers as per-point runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgecompile.errors import InputError
from edgecompile.robustness.corruptions import CORRUPTIONS, SEVERITIES
from edgecompile.robustness.robustness import check_protocol, is_full_protocol

from test_robustness import _labelled


def test_default_protocol_is_all_five_severities() -> None:
    assert SEVERITIES == (1, 2, 3, 4, 5)
    assert is_full_protocol(CORRUPTIONS, SEVERITIES)
    assert not is_full_protocol(CORRUPTIONS, (1, 3, 5))
    assert not is_full_protocol(CORRUPTIONS[:3], SEVERITIES)
    assert check_protocol(("fog",), (5, 1, 3)) == (("fog",), (1, 3, 5))


@pytest.mark.parametrize("severities", [(0,), (6,), (True,), ("3",), (1.0,), (), (1, 1)])
def test_bad_severities_are_input_errors(severities: tuple) -> None:
    with pytest.raises(InputError, match="--severity"):
        check_protocol(("fog",), severities)


@pytest.mark.parametrize("corruptions", [("snow",), (), ("fog", "fog")])
def test_bad_corruptions_are_input_errors(corruptions: tuple) -> None:
    with pytest.raises(InputError, match="--corruption"):
        check_protocol(corruptions, (1,))


def test_shared_reference_matches_per_point_run(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sweep points (copies of one build) scored together equal `run_robustness` on each."""
    import edgecompile.robustness.sweep as sweep
    from edgecompile.robustness.build import robustness_path, run_robustness
    from edgecompile.stages.context import BuildContext

    root = tmp_path / "sweep"
    dirs = []
    for name in ("a", "b"):  # the whole tiny root: its build records the recipe by a relative path
        shutil.copytree(built.parent, root / name)
        dirs.append(root / name / built.name)
    (root / "sweep.json").write_text(json.dumps({"points": [{"name": d.parent.name, "state": "built", "build_dir": str(d)} for d in dirs] + [{"name": "c", "state": "merged", "build_dir": str(dirs[0])}]}))
    data = _labelled()
    original = sweep._open

    def with_labelled(build_dir: Path, samples: int | None) -> dict:
        point = original(build_dir, samples)
        point["eval_set"] = data  # the tiny build's recipe evaluates an unlabelled synthetic set
        return point

    monkeypatch.setattr(sweep, "_open", with_labelled)
    results = sweep.run_sweep_robustness(root, ("gaussian_noise", "contrast"), (1, 5), log=lambda _: None)
    assert sorted(results) == ["a", "b"]
    assert results["a"]["reference_shared_with"] == ["b"]
    alone = run_robustness(BuildContext.open(built), ("gaussian_noise", "contrast"), (1, 5), None, eval_set=data)
    for name, d in zip(("a", "b"), dirs, strict=True):
        written = json.loads(robustness_path(d).read_text())
        assert written["full_protocol"] is False and written["severities"] == [1, 5]
        for who in ("artifact", "reference"):
            assert written[who]["accuracy"] == alone[who]["accuracy"]
            for key in ("clean", "rs", "mce", "ce_normalised"):  # the same computation: the same floats
                assert written[who][key] == alone[who][key]


def test_sweep_without_sweep_json_is_an_input_error(tmp_path: Path) -> None:
    from edgecompile.robustness.sweep import run_sweep_robustness

    with pytest.raises(InputError, match="sweep.json"):
        run_sweep_robustness(tmp_path)
