"""Content hashes for stage inputs and outputs (what decides whether a stage is redone)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
