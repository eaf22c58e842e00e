"""edgecompile.progress: plain periodic lines without a TTY, nothing under -q, rich on a terminal."""

from __future__ import annotations

import io

import pytest

from edgecompile import progress


@pytest.fixture(autouse=True)
def _reset() -> None:
    yield
    progress.configure(0)


def test_plain_mode_prints_periodic_lines_and_a_final_one(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    progress.configure(0, stream=stream)
    monkeypatch.setattr(progress, "PERIOD_S", 0.0)
    assert list(progress.track(range(5), "calibrate: 3 tensors")) == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("calibrate: 3 tensors: 5/5 (100%) done in") and len(lines) >= 2
    assert "\x1b[" not in stream.getvalue()  # no colour codes in a log


def test_short_loops_are_silent_by_default_and_quiet_silences_everything() -> None:
    stream = io.StringIO()
    progress.configure(0, stream=stream)
    list(progress.track(range(3), "fast"))
    assert stream.getvalue() == ""
    progress.configure(-1, stream=stream)
    assert progress.mode() == "off"
    with progress.task("anything", total=2) as t:
        t.advance(2)
    assert stream.getvalue() == ""


def test_rich_mode_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress.configure(0, stream=stream)
    assert progress.mode() == "rich"
    with progress.task("evaluate", total=4) as t:
        for _ in range(4):
            t.advance()
    assert "evaluate" in stream.getvalue() and "4/4" in stream.getvalue()


def test_third_party_bars_are_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(name, raising=False)
    progress.silence_third_party()
    import os

    assert os.environ["TQDM_DISABLE"] == "1" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_nested_loops_share_one_live_display() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress.configure(0, stream=stream)
    with progress.task("robustness", total=2) as outer:
        for _ in range(2):
            list(progress.track(range(3), "evaluate: image batches"))  # rich allows one live display: must not raise
            outer.advance()
    assert "robustness" in stream.getvalue()
