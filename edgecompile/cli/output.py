"""Machine-readable output for the CLI: ``--json`` prints exactly one JSON object on stdout.

While a ``--json`` command runs, everything it (or a stage) would print to stdout goes to stderr,
so ``edgecompile build ... --json | jq .verdict`` always sees one parseable object, also when the
command fails (then ``{"ok": false, "error": ..., "exit_code": N}``, and the usual error line on
stderr). Without ``--json`` nothing changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from edgecompile import progress
from edgecompile.errors import EdgecompileError


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (logs and progress go to stderr).")(fn)


def quiet() -> bool:
    """-q given: print only results and errors."""
    return progress.verbosity() < 0


def emit_json(data: dict[str, Any], stream: Any = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(data, default=str, indent=None, sort_keys=False) + "\n")
    out.flush()  # a closed pipe surfaces here, inside the command's error handling


@contextlib.contextmanager
def machine_output(as_json: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yield ``emit(obj)``; with ``as_json``, stdout is stderr until the block ends and ``emit`` writes the real stdout."""
    real = sys.stdout
    if not as_json:
        yield lambda data: emit_json(data, real)
        return
    emitted: list[bool] = []
    fd_saved = _divert_fd(real)  # C/C++ libraries print to fd 1 directly: send that to stderr too
    if fd_saved is not None:
        real = os.fdopen(fd_saved[1], "w", closefd=False)

    def emit(data: dict[str, Any]) -> None:
        emitted.append(True)
        emit_json(data, real)

    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield emit
    except EdgecompileError as exc:
        if not emitted:
            emit_json({"ok": False, "error": str(exc), "error_type": type(exc).__name__, "exit_code": int(exc.exit_code)}, real)
        raise
    except click.UsageError as exc:
        if not emitted:
            emit_json({"ok": False, "error": exc.format_message(), "error_type": "UsageError", "exit_code": exc.exit_code}, real)
        raise
    finally:
        if fd_saved is not None:
            real.flush()
            os.dup2(fd_saved[1], fd_saved[0])
            os.close(fd_saved[1])


def _divert_fd(stream: Any) -> tuple[int, int] | None:
    """Point the OS-level stdout at stderr; return (fd, saved copy) or None when stdout is no real file (CliRunner)."""
    try:
        fd, err = stream.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    stream.flush()
    saved = os.dup(fd)
    os.dup2(err, fd)
    return fd, saved


def echo(message: str = "", **kwargs: Any) -> None:
    """click.echo unless -q."""
    if not quiet():
        click.echo(message, **kwargs)
