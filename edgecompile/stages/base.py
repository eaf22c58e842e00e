"""Stage contract and the runner that skips unchanged stages and never leaves partial outputs."""

from __future__ import annotations

import os
import resource
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgecompile.builddir import lock
from edgecompile.builddir.atomic import remove_partials, staged_directory
from edgecompile.builddir.hashing import hash_tree, hash_value
from edgecompile.builddir.manifest import StageRecord, tool_versions
from edgecompile.errors import EdgecompileError, StageError
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import OUTPUT_TYPES, Upstream


@dataclass(frozen=True)
class StageResult:
    """What a stage did (ran or skipped, summary, wall time) and the typed output it hands forward.

    ``fingerprint`` is the hash of the stage's recorded outputs: a later stage's inputs include the
    fingerprints of the stages it requires, so a changed upstream output redoes it.
    """

    stage: str
    skipped: bool
    summary: dict[str, Any]
    wall_s: float
    output: Any = None
    fingerprint: str = ""
    reused_from: str | None = None  # the sibling build directory this stage was copied from (sweeps)


class Stage(ABC):
    """One step of the pipeline. ``run`` writes only into the directory it is given.

    ``requires`` names the stages whose typed outputs ``run`` receives in ``upstream``;
    ``output_type`` reads this stage's typed output back from its directory and summary.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    output_type: ClassVar[Any]

    @abstractmethod
    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        """This stage's own settings that determine its output (upstream fingerprints are added by the runner)."""

    @abstractmethod
    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
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


def _save_traceback(ctx: BuildContext, stage: str, exc: BaseException) -> Path:
    """Keep the full traceback of a failed stage: the one-line error names this file."""
    import traceback

    log = ctx.path("logs", f"{stage}.traceback.txt")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(traceback.format_exception(exc)))
    return log


def _upstream(results: dict[str, StageResult], stage: Stage) -> Upstream:
    missing = [r for r in stage.requires if r not in results]
    if missing:
        raise StageError(stage.name, f"needs the output of {', '.join(missing)}, which did not run first", tuple(results))
    return Upstream(**{r: results[r].output for r in stage.requires})


def stage_inputs(ctx: BuildContext, stage: Stage, results: dict[str, StageResult]) -> dict[str, str]:
    """The inputs that decide whether ``stage`` is redone (what the manifest fingerprints)."""
    # The tools that write a stage's outputs are inputs too: upgrading torch, onnxruntime, the QNN
    # SDK, coremltools or edgecompile itself redoes the stages they touch.
    tools = ",".join(f"{k}={v}" for k, v in sorted(tool_versions().items()))
    upstream = {f"stage:{r}": results[r].fingerprint for r in stage.requires if r in results}
    return {"tools": tools, **upstream, **{k: str(v) for k, v in stage.inputs(ctx).items()}}


def _result(ctx: BuildContext, stage: Stage | str, record: StageRecord, skipped: bool, wall: float, reused_from: str | None = None) -> StageResult:
    name = stage if isinstance(stage, str) else stage.name
    output = OUTPUT_TYPES[name].read(ctx.path(name), record.summary)
    return StageResult(name, skipped, record.summary, wall, output, hash_value(record.outputs), reused_from)


def recorded_result(ctx: BuildContext, stage: str) -> StageResult | None:
    """The typed result of a stage recorded in the build directory, or None when it never completed."""
    record = ctx.manifest().stages.get(stage)
    if record is None or not ctx.path(stage).exists():
        return None
    return _result(ctx, stage, record, True, 0.0)


def _tell_if_edited(ctx: BuildContext, manifest: Any, stage: str, inputs: dict[str, str]) -> None:
    """Outputs whose bytes changed after they were recorded (same inputs): say so before redoing them."""
    record = manifest.stages.get(stage)
    if record is None or record.fingerprint != hash_value(inputs):
        return
    changed = manifest.changed_outputs(stage, ctx.build_dir)
    if changed:
        where = ", ".join(str(ctx.path(rel)) for rel in changed)
        ctx.notice(f"edited:{stage}", f"{where}: bytes no longer match manifest.json's record of stage '{stage}' (edited or damaged after it was built); redoing '{stage}' from its recorded inputs")


def run_stage(
    ctx: BuildContext,
    stage: Stage,
    results: dict[str, StageResult] | None = None,
    *,
    force: bool = False,
    reuse: Callable[[str, str], tuple[StageRecord, Path] | None] | None = None,
) -> StageResult:
    """Run ``stage`` unless its inputs are unchanged; outputs appear atomically or not at all.

    ``results`` holds the earlier stages' results (their typed outputs are handed to ``run``); None
    reads the required stages' results recorded in the build directory (running one stage alone).
    ``reuse(stage, fingerprint)`` may copy a matching stage from another build directory into this
    one and return its record and that directory (what sweeps do across grid points).
    """
    if results is None:
        recorded = {r: recorded_result(ctx, r) for r in stage.requires}
        results = {r: v for r, v in recorded.items() if v is not None}
    completed = tuple(results)
    lock.hold(ctx.build_dir)  # one writer per build directory, until the command ends (ctx.close)
    remove_partials(ctx.build_dir)
    upstream = _upstream(results, stage)
    inputs = stage_inputs(ctx, stage, results)
    manifest = ctx.manifest()
    if not force and manifest.is_current(stage.name, inputs, ctx.build_dir):
        ctx.bind()
        return _result(ctx, stage, manifest.stages[stage.name], True, 0.0)
    _tell_if_edited(ctx, manifest, stage.name, inputs)
    if not force and reuse is not None:
        copied = reuse(stage.name, hash_value(inputs))
        if copied is not None:
            record, source = copied
            ctx.record_stage(stage.name, record)
            return _result(ctx, stage, record, True, 0.0, str(source))
    start = time.perf_counter()
    try:
        with _PeakRss() as rss, staged_directory(ctx.path(stage.name)) as out:
            summary = stage.run(ctx, out, upstream)
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
    ctx.record_stage(stage.name, record)
    return _result(ctx, stage, record, False, wall)
