"""Progress of long loops (export, calibration, evaluation, robustness, sweep), and quiet third parties.

Why our own small module over calling rich directly: the same loop runs on a terminal (a live
rich bar on stderr), in a CI log (no TTY: one plain line every ``PERIOD_S`` seconds and one at
the end, no escape codes), under ``-q`` (nothing) and inside tests (nothing unless asked). Call
sites only say what they are doing::

    from edgecompile import progress

    for feed in progress.track(feeds, "calibrate vision_encoder", total=n):
        ...

    with progress.task("evaluate artifact", total=len(samples)) as bar:
        for s in samples:
            ...
            bar.advance()

Verbosity is process-wide (set once by the CLI from ``-v``/``-q``): -1 quiet, 0 default, 1+
verbose. Library users who never call :func:`configure` get the plain-line mode on a non-TTY
and rich bars on a TTY, as the CLI does.

:func:`silence_third_party` turns off transformers' / huggingface_hub's / tqdm's progress bars and
onnxruntime's coloured warning lines, which used to leak into CI logs; our bars replace them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

T = TypeVar("T")

PERIOD_S = 10.0  # plain mode: at most one line per task this often (plus the final one)

_state: dict[str, Any] = {"verbosity": 0, "mode": None, "stream": None}


def configure(verbosity: int = 0, mode: str | None = None, stream: TextIO | None = None) -> None:
    """Set the process-wide verbosity (-1 quiet, 0 default, >=1 verbose) and, optionally, force a mode.

    ``mode``: ``"rich"``, ``"plain"`` or ``"off"``; None picks rich on a TTY, plain otherwise.
    Also sets the level of the ``edgecompile`` logger (WARNING / INFO / DEBUG) on stderr.
    """
    _state.update(verbosity=verbosity, mode=mode, stream=stream)
    logger = logging.getLogger("edgecompile")
    logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING if verbosity == 0 else logging.ERROR)
    if not any(getattr(h, "_edgecompile", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._edgecompile = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if verbosity < 2:
        silence_third_party()


def verbosity() -> int:
    return int(_state["verbosity"])


def _stream() -> TextIO:
    return _state["stream"] or sys.stderr


def mode() -> str:
    """The mode a new task uses now: off (quiet), rich (a TTY) or plain."""
    if _state["verbosity"] < 0:
        return "off"
    if _state["mode"]:
        return str(_state["mode"])
    stream = _stream()
    return "rich" if getattr(stream, "isatty", lambda: False)() and os.environ.get("TERM") != "dumb" else "plain"


def silence_third_party() -> None:
    """Turn off other libraries' progress bars and colour codes (idempotent; cheap when they are not imported)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")  # tqdm >= 4.66 reads it for every new bar
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("torch.utils._pytree", "torchao"):  # import-time deprecation chatter of torchao's enums
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        with contextlib.suppress(Exception):
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        with contextlib.suppress(Exception):
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
    if "onnxruntime" in sys.modules:
        with contextlib.suppress(Exception):
            import onnxruntime as ort

            ort.set_default_logger_severity(3)  # errors only: its warnings are ANSI-coloured lines


def _live_display() -> Any:
    """The one rich Progress of the process (rich allows one live display): nested loops add rows to it."""
    if _state.get("live") is None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        live = Progress(*columns, console=Console(file=_stream()), transient=False)
        live.start()
        _state["live"] = live
    return _state["live"]


def _release_live(task_id: Any) -> None:
    live = _state.get("live")
    if live is None:
        return
    if len(live.task_ids) > 1:
        live.remove_task(task_id)  # an inner loop: its row goes, the outer one stays
        return
    live.stop()
    _state["live"] = None


class Task:
    """One loop's progress; ``advance`` is cheap enough to call per sample."""

    def __init__(self, description: str, total: int | None) -> None:
        self.description, self.total, self.done = description, total, 0
        self.mode = mode()
        self._start = self._last = time.monotonic()
        self._rich: Any = None
        self._id: Any = None
        if self.mode == "rich":
            self._rich = _live_display()
            self._id = self._rich.add_task(description, total=total)

    def _line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self._start
        count = f"{self.done}/{self.total} ({100.0 * self.done / self.total:.0f}%)" if self.total else f"{self.done}"
        rate = f", {self.done / elapsed:.2f}/s" if elapsed > 0 and self.done else ""
        return f"{self.description}: {count} {'done in' if final else 'after'} {elapsed:.1f}s{rate}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.mode == "rich":
            self._rich.advance(self._id, n)
        elif self.mode == "plain":
            now = time.monotonic()
            if now - self._last >= PERIOD_S and (self.total is None or self.done < self.total):
                self._last = now
                print(self._line(), file=_stream(), flush=True)

    def close(self) -> None:
        if self.mode == "rich":
            _release_live(self._id)
        elif self.mode == "plain" and (time.monotonic() - self._start >= PERIOD_S or _state["verbosity"] >= 1):
            print(self._line(final=True), file=_stream(), flush=True)  # short loops stay silent unless -v


@contextlib.contextmanager
def task(description: str, total: int | None = None) -> Iterator[Task]:
    """A progress task for a loop the caller advances itself."""
    t = Task(description, total)
    try:
        yield t
    finally:
        t.close()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` unchanged while reporting progress (total: ``len(items)`` when it has one)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total) as t:
        for item in items:
            yield item
            t.advance()
