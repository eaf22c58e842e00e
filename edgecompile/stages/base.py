"""Stage contract and the runner that skips unchanged stages and never leaves partial outputs."""

from __future__ import annotations

import os
import resource
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgecompile.builddir.atomic import remove_partials, staged_directory
from edgecompile.builddir.hashing import hash_tree, hash_value
from edgecompile.builddir.manifest import Manifest, StageRecord, tool_versions
from edgecompile.errors import EdgecompileError, StageError
from edgecompile.stages.context import BuildContext


@dataclass(frozen=True)
class StageResult:
    """What a stage did: ran or skipped, its summary, and its wall time."""

    stage: str
    skipped: bool
    summary: dict[str, Any]
    wall_s: float


class Stage(ABC):
    """One step of the pipeline. ``run`` writes only into the directory it is given."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        """Everything that determines this stage's output (hashes and settings)."""

    @abstractmethod
    def run(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """Produce outputs in ``out``; return a JSON-able summary for the manifest."""


class _PeakRss:
    """Samples this process's resident memory while a stage runs (ru_maxrss only ever grows)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self._stop.wait(0.05)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


def upstream(ctx: BuildContext, stages: tuple[str, ...]) -> dict[str, str]:
    """Fingerprints of earlier stages' outputs, as inputs of a later one."""
    manifest = Manifest.load(ctx.build_dir)
    return {f"stage:{s}": hash_value(manifest.stages[s].outputs) for s in stages if s in manifest.stages}


def _save_traceback(ctx: BuildContext, stage: str, exc: BaseException) -> Path:
    """Keep the full traceback of a failed stage: the one-line error names this file."""
    import traceback

    log = ctx.path("logs", f"{stage}.traceback.txt")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(traceback.format_exception(exc)))
    return log


def stage_inputs(ctx: BuildContext, stage: Stage) -> dict[str, str]:
    """The inputs that decide whether ``stage`` is redone (what the manifest fingerprints)."""
    # The tools that write a stage's outputs are inputs too: upgrading torch, onnxruntime, the QNN
    # SDK, coremltools or edgecompile itself redoes the stages they touch.
    tools = ",".join(f"{k}={v}" for k, v in sorted(tool_versions().items()))
    return {"tools": tools, **{k: str(v) for k, v in stage.inputs(ctx).items()}}


def run_stage(ctx: BuildContext, stage: Stage, *, force: bool = False, completed: tuple[str, ...] = ()) -> StageResult:
    """Run ``stage`` unless its inputs are unchanged; outputs appear atomically or not at all."""
    remove_partials(ctx.build_dir)
    manifest = Manifest.load(ctx.build_dir)
    inputs = stage_inputs(ctx, stage)
    if not force and manifest.is_current(stage.name, inputs, ctx.build_dir):
        record = manifest.stages[stage.name]
        return StageResult(stage.name, True, record.summary, 0.0)
    start = time.perf_counter()
    try:
        with _PeakRss() as rss, staged_directory(ctx.path(stage.name)) as out:
            summary = stage.run(ctx, out)
    except StageError as exc:  # raised by a backend: add what ran before it
        raise StageError(stage.name, exc.detail, completed) from exc
    except EdgecompileError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a tool (torch, onnxruntime, ...) or a bug failed inside the stage
        log = _save_traceback(ctx, stage.name, exc)
        raise StageError(stage.name, f"{type(exc).__name__}: {exc} (traceback: {log})", completed) from exc
    wall = time.perf_counter() - start
    final = ctx.path(stage.name)
    record = StageRecord(
        inputs=inputs,
        fingerprint=hash_value(inputs),
        outputs={stage.name: hash_tree(final)},
        tools=tool_versions(),
        wall_s=round(wall, 3),
        peak_rss_mb=round(rss.peak / 2**20, 1),
        summary=summary,
    )
    manifest.record(stage.name, record)
    return StageResult(stage.name, False, summary, wall)
