"""The digest cache of large files: used only while the file is unchanged, invalidated on any write."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from edgecompile.builddir import hashing
from edgecompile.builddir.hashing import cache_path, hash_file

SIZE = hashing.CACHE_MIN_BYTES + 17


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGECOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0.0)  # files written just now may be cached (the racy rule has its own test)
    return tmp_path / "cache" / "file-hashes.json"


def _write(path: Path, fill: bytes) -> Path:
    path.write_bytes(fill * SIZE)
    time.sleep(0.03)  # past one file-system timestamp tick: the next write gets a new mtime/ctime
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached(cache: Path, path: Path) -> str | None:
    return json.loads(cache.read_text())["files"].get(str(path.resolve()), {}).get("sha256")


def test_cached_digest_reused_only_while_unchanged(cache: Path, tmp_path: Path) -> None:
    f = _write(tmp_path / "weights.bin", b"a")
    assert hash_file(f) == _sha(f) and _cached(cache, f) == _sha(f)
    # a poisoned entry with a matching key is what a cache hit returns: proves the cache is read
    data = json.loads(cache.read_text())
    data["files"][str(f.resolve())]["sha256"] = "cached"
    cache.write_text(json.dumps(data))
    assert hash_file(f) == "cached"
    os.utime(f)  # touch: new mtime, same contents -> recomputed (not the poisoned value)
    assert hash_file(f) == _sha(f)


def test_same_size_rewrite_in_place_detected(cache: Path, tmp_path: Path) -> None:
    f = _write(tmp_path / "weights.bin", b"a")
    old = hash_file(f)
    st = f.stat()
    with f.open("r+b") as handle:  # same inode, same size, different bytes
        handle.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime put back: ctime still moves
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_ino == st.st_ino
    new = hash_file(f)
    assert new != old and new == _sha(f)


def test_atomic_replace_detected(cache: Path, tmp_path: Path) -> None:
    f = _write(tmp_path / "weights.bin", b"a")
    old = hash_file(f)
    g = _write(tmp_path / "new.bin", b"c")
    st = f.stat()
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    g.replace(f)  # new inode, same size and mtime
    assert hash_file(f) == _sha(f) != old


def test_corrupt_cache_ignored_and_rewritten(cache: Path, tmp_path: Path) -> None:
    f = _write(tmp_path / "weights.bin", b"a")
    cache.parent.mkdir(parents=True)
    cache.write_text('{"version": 1, "files": [truncated')
    assert hash_file(f) == _sha(f)
    assert _cached(cache, f) == _sha(f)  # replaced by a valid cache
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_racy_and_small_files_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECOMPILE_CACHE_DIR", str(tmp_path / "cache"))
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"a" * SIZE)  # modified just now: a second write in the same tick could go unseen
    small = tmp_path / "small.json"
    small.write_text("{}")
    assert hash_file(fresh) == _sha(fresh) and hash_file(small) == _sha(small)
    assert not cache_path().exists()


def test_cache_location_and_off_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGECOMPILE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path() == tmp_path / "xdg" / "edgecompile" / "file-hashes.json"
    monkeypatch.setenv("EDGECOMPILE_HASH_CACHE", "0")
    assert cache_path() is None
