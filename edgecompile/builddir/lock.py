"""One writer per build directory: an flock'd ``.lock`` file holding the writer's pid.

Two builds into one ``--out`` used to race (each stage's cleanup deleted the other's partial
directory, and the manifest was rewritten from a copy read at stage start). Now a process takes
the directory's lock before it writes anything there and keeps it until its command ends; a
second process is refused at once with exit 3 naming the holder's pid, or waits up to
``$EDGECOMPILE_LOCK_WAIT`` seconds for it (0 by default). The lock is re-entrant within a process
(a sweep or a test runs many commands in one interpreter). ``flock`` is dropped by the kernel when
its holder dies, kill -9 included, so a stale ``.lock`` file never blocks anyone; a released lock
file is removed while it is still held, and an acquirer checks that the file it locked is still
the one at the path (the classic unlink race).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edgecompile.errors import InputError

LOCK_FILE = ".lock"
WAIT_ENV = "EDGECOMPILE_LOCK_WAIT"
_POLL_S = 0.1


@dataclass
class _Held:
    fd: int
    path: Path
    created_dir: bool  # this process made the directory: remove it again if nothing was kept


_HELD: dict[Path, _Held] = {}


def _wait_s() -> float:
    raw = os.environ.get(WAIT_ENV, "0")
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"${WAIT_ENV}: expected a number of seconds to wait for a build directory's lock, got {raw!r}") from None
    return max(0.0, value)


def _holder(path: Path, settle_s: float = 1.0) -> str:
    """The lock holder's pid. The holder writes it just after taking the lock, so an empty file is
    read again for up to ``settle_s`` before the message falls back to "another process"."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            pid = path.read_text().strip()
        except OSError:
            return "another process"
        if pid.isdigit():
            return f"pid {pid}"
        if time.monotonic() >= deadline:
            return "another process"
        time.sleep(0.02)


def _unwritable(build_dir: Path, exc: OSError) -> InputError:
    reason = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.ENOTDIR: "a path component is a regular file", errno.ENOSPC: "no space left on the device"}.get(exc.errno, exc.strerror or str(exc))
    return InputError(f"{build_dir}: cannot write into the build directory ({reason}); choose another --out")


def prepare_dir(build_dir: Path) -> bool:
    """Create ``build_dir`` (and parents) unless it exists; True when this call created it.

    Every way this fails (a parent is a regular file, read-only file system, no permission) is a
    named input error, not a traceback.
    """
    if build_dir.is_dir():
        return False
    if build_dir.exists():
        raise InputError(f"{build_dir}: exists and is not a directory; choose another --out")
    for parent in build_dir.parents:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"{build_dir}: --out lies under {parent}, which is a regular file, not a directory")
    try:
        build_dir.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise _unwritable(build_dir, exc) from None
    return True


def hold(build_dir: Path, *, created_dir: bool = False) -> None:
    """Take ``build_dir``'s lock for this process (no-op when it already holds it)."""
    build_dir = build_dir.resolve()
    if build_dir in _HELD:
        return
    path = build_dir / LOCK_FILE
    deadline = time.monotonic() + _wait_s()
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _unwritable(build_dir, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(_POLL_S)
                continue
            waited = f" (waited {_wait_s():g} s)" if _wait_s() else f" (set {WAIT_ENV}=SECONDS to wait for it)"
            raise InputError(f"{build_dir}: another edgecompile process ({_holder(path)}) is building into this directory{waited}; wait for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder removed the file between our open and our lock: lock the new one
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise _unwritable(build_dir, exc) from None
        _HELD[build_dir] = _Held(fd, path, created_dir)
        return


def holds(build_dir: Path) -> bool:
    """Whether this process holds ``build_dir``'s lock."""
    return build_dir.resolve() in _HELD


def release(build_dir: Path) -> None:
    """Drop the lock (removing its file); a directory this process created and left empty goes too."""
    held = _HELD.pop(build_dir.resolve(), None)
    if held is None:
        return
    try:
        held.path.unlink(missing_ok=True)
    finally:
        os.close(held.fd)
    if held.created_dir:
        try:
            held.path.parent.rmdir()  # only succeeds when empty: a refused build leaves nothing behind
        except OSError:
            pass


def release_all() -> None:
    for build_dir in list(_HELD):
        release(build_dir)


atexit.register(release_all)
