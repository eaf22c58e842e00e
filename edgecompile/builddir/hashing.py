"""Content hashes for stage inputs and outputs (what decides whether a stage is redone).

Hashing a multi-gigabyte checkpoint on every command costs tens of seconds, so digests of large
files are cached by what the file system says about them: (path, size, mtime_ns, ctime_ns, inode,
device). Any write changes mtime and ctime (``touch`` included; ctime cannot be set back by a
user, so a same-size rewrite with its mtime restored is still seen), and an atomic replace
changes the inode. A file modified within :data:`RACY_SECONDS` of the moment its digest is taken
is not cached (git's "racily clean" rule: a second write within the same timestamp tick would
keep every field the same). The cache is a JSON file in ``$EDGECOMPILE_CACHE_DIR``, else
``$XDG_CACHE_HOME/edgecompile``, else ``~/.cache/edgecompile``; it is written atomically
(temporary file + rename), a corrupt or unreadable one is ignored, and ``EDGECOMPILE_HASH_CACHE=0``
turns it off. The cache only ever saves work: a digest is used only when every field matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
CACHE_MIN_BYTES = 1 << 20  # smaller files are hashed every time (cheap) and kept out of the cache
RACY_SECONDS = 2.0
_MAX_ENTRIES = 20_000
_CACHE_FILE = "file-hashes.json"
_VERSION = 1


def cache_path() -> Path | None:
    """Where the digest cache lives, or None when it is turned off."""
    if os.environ.get("EDGECOMPILE_HASH_CACHE", "1") == "0":
        return None
    if os.environ.get("EDGECOMPILE_CACHE_DIR"):
        return Path(os.environ["EDGECOMPILE_CACHE_DIR"]) / _CACHE_FILE
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "edgecompile" / _CACHE_FILE


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}  # missing or corrupt: start again, never fail a build over a cache
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _store(path: Path, name: str, key: list[int], digest: str) -> None:
    files = _load(path)
    files[name] = {"key": key, "sha256": digest, "used": time.time()}
    if len(files) > _MAX_ENTRIES:
        keep = sorted(files.items(), key=lambda kv: -float(kv[1].get("used", 0)) if isinstance(kv[1], dict) else 0)[: _MAX_ENTRIES // 2]
        files = dict(keep)
    with contextlib.suppress(OSError):  # a read-only home still builds, uncached
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(json.dumps({"version": _VERSION, "files": files}))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_file(path: Path) -> str:
    """SHA-256 of a file's contents; large files' digests come from the cache when the file is unchanged."""
    cache = cache_path()
    before = path.stat()
    if cache is None or before.st_size < CACHE_MIN_BYTES:
        return _sha256(path)
    name = str(path.resolve())
    entry = _load(cache).get(name)
    if isinstance(entry, dict) and entry.get("key") == _key(before) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = _sha256(path)
    after = path.stat()
    newest = max(after.st_mtime_ns, after.st_ctime_ns) / 1e9
    if _key(after) == _key(before) and time.time() - newest > RACY_SECONDS:  # unchanged while read, and not racy
        _store(cache, name, _key(after), digest)
    return digest


def hash_tree(path: Path) -> str:
    """Hash a file, or every file under a directory (names and contents, sorted)."""
    if path.is_file():
        return hash_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        if "__pycache__" in child.parts or child.name.startswith("."):
            continue
        digest.update(str(child.relative_to(path)).encode())
        digest.update(hash_file(child).encode())
    return digest.hexdigest()


def hash_value(value: Any) -> str:
    """Hash a JSON-able value canonically (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
