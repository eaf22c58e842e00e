"""Write-then-rename helpers: a crash or an error never leaves a half-written output behind."""

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


def write_json(path: Path, data: Any) -> None:
    """Write strict JSON to a temporary sibling, then rename it over ``path`` (atomic on POSIX)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(strict_json_value(data), indent=1, default=str, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Atomic text write (see :func:`write_json`)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
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
    tmp = final.with_name(f".{final.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def remove_partials(root: Path) -> None:
    """Delete leftovers of a process that was killed mid-stage (SIGKILL skips cleanup)."""
    if root.is_dir():
        for leftover in [*root.glob(".*.partial-*"), *root.glob(".*.old-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in root.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)
