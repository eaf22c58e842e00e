"""manifest.json: per stage, its inputs (content hashes), outputs, tool versions, time and memory.

A stage is skipped when its recorded input fingerprint equals the current one and its recorded
outputs still hash the same; otherwise it is redone. ``notices`` keeps what the user was told
(a calibration set smaller than asked, an artifact edited after it was recorded), keyed by topic.
Writers change the manifest only through :func:`update`: a read-modify-write of the file on disk
under the build directory's lock, never a copy read when a stage started.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgecompile.builddir.atomic import write_json
from edgecompile.builddir.hashing import hash_tree, hash_value
from edgecompile.errors import InputError

TOOLS = ("edgecompile", "onnx", "onnxruntime", "onnxruntime-qnn", "torch", "transformers", "polygraphy", "coremltools", "tensorrt", "numpy")


def tool_versions() -> dict[str, str]:
    """Versions of the tools that can change a stage's output."""
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class StageRecord:
    """What one completed stage consumed and produced."""

    inputs: dict[str, str]
    fingerprint: str
    outputs: dict[str, str]
    tools: dict[str, str]
    wall_s: float
    peak_rss_mb: float
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """The whole build directory's record; one file, rewritten atomically after every stage."""

    path: Path
    stages: dict[str, StageRecord] = field(default_factory=dict)
    notices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, build_dir: Path) -> Manifest:
        """The manifest on disk; a corrupt one is a named input error (exit 3), not a traceback."""
        path = build_dir / "manifest.json"
        if not path.is_file():
            return cls(path)
        fix = "delete it to redo every stage, or restore it"
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{path}: corrupt manifest (not UTF-8 text); {fix}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: corrupt manifest (not valid JSON: {exc.msg}); {fix}") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read the manifest: {exc.strerror}") from None
        stages = data.get("stages", {}) if isinstance(data, dict) else None
        notices = data.get("notices", {}) if isinstance(data, dict) else None
        if not isinstance(stages, dict) or not isinstance(notices, dict):
            raise InputError(f"{path}: corrupt manifest (expected an object with 'stages' and 'notices' objects); {fix}")
        records = {}
        for name, rec in stages.items():
            try:
                records[name] = StageRecord(**rec)
            except TypeError:
                raise InputError(f"{path}: stages.{name}: corrupt stage record (expected the fields {', '.join(StageRecord.__dataclass_fields__)}); {fix}") from None
        return cls(path, records, {str(k): str(v) for k, v in notices.items()})

    def save(self) -> None:
        write_json(self.path, {"schema_version": 1, "stages": {k: asdict(v) for k, v in self.stages.items()}, "notices": self.notices})

    def is_current(self, stage: str, inputs: dict[str, str], build_dir: Path) -> bool:
        """True when ``stage`` ran with these inputs and its outputs are still intact."""
        record = self.stages.get(stage)
        if record is None or record.fingerprint != hash_value(inputs):
            return False
        for rel, digest in record.outputs.items():
            out = build_dir / rel
            if not out.exists() or hash_tree(out) != digest:
                return False
        return True

    def changed_outputs(self, stage: str, build_dir: Path) -> list[str]:
        """The recorded outputs of ``stage`` whose bytes on disk no longer match the record."""
        record = self.stages.get(stage)
        if record is None:
            return []
        return [rel for rel, digest in record.outputs.items() if (build_dir / rel).exists() and hash_tree(build_dir / rel) != digest]

    def record(self, stage: str, record: StageRecord) -> None:
        self.stages[stage] = record
        self.save()


def update(build_dir: Path, change: Callable[[Manifest], None]) -> Manifest:
    """Read manifest.json fresh, apply ``change`` and write it back atomically, under the directory's lock."""
    from edgecompile.builddir import lock

    lock.hold(build_dir)  # re-entrant: the command that writes here already holds it
    manifest = Manifest.load(build_dir)
    change(manifest)
    manifest.save()
    return manifest
