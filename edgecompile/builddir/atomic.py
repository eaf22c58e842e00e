"""Write-then-rename helpers: a crash or an error never leaves a half-written output behind.

Every temporary name carries the pid of the process that made it (``.<name>.partial-<pid>-<id>``),
so cleanup after a kill -9 removes only leftovers of processes that are gone (or its own), never
the in-progress directory of a live build next door.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def strict_json_value(data: Any) -> Any:
    """``data`` with NaN/Inf floats as null: report.json is strict JSON that any parser reads
    (a metric that could not be computed is null, as a gate reads it)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: strict_json_value(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict_json_value(v) for v in data]
    return data


def _tag() -> str:
    """The owner part of a temporary name: this process's pid and a random id."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON to a temporary sibling, then rename it over ``path`` (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp-{_tag()}")
    try:
        tmp.write_text(json.dumps(strict_json_value(data), indent=1, default=str, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Atomic text write (see :func:`write_json`)."""
    tmp = path.with_name(f".{path.name}.tmp-{_tag()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` only if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary directory is removed and an
    existing ``final`` is left exactly as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial-{_tag()}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{_tag()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def owner_pid(name: str) -> int | None:
    """The pid in a temporary name (``...partial-<pid>-<id>``); None for names without one."""
    tail = name.rsplit(".partial-", 1)[-1] if ".partial-" in name else name.rsplit(".old-", 1)[-1] if ".old-" in name else name.rsplit(".tmp-", 1)[-1]
    pid, sep, _ = tail.partition("-")
    return int(pid) if sep and pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    pid = owner_pid(name)
    if pid is None:  # an older edgecompile's name without an owner: nothing can still be writing it under the lock
        return True
    return pid == os.getpid() or not pid_alive(pid)


def remove_partials(root: Path) -> list[Path]:
    """Delete leftovers of processes that were killed mid-stage (SIGKILL skips cleanup).

    Only this process's own leftovers and those of dead pids are removed; a live process's
    partial directory is its own. Returns what was removed.
    """
    removed: list[Path] = []
    if root.is_dir():
        for leftover in [*root.glob(".*.partial-*"), *root.glob(".*.old-*")]:
            if _stale(leftover.name):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
        for leftover in root.glob(".*.tmp-*"):
            if _stale(leftover.name):
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
    return removed
