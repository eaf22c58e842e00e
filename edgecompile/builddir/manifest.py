"""manifest.json: per stage, its inputs (content hashes), outputs, tool versions, time and memory.

A stage is skipped when its recorded input fingerprint equals the current one and its recorded
outputs still hash the same; otherwise it is redone.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edgecompile.builddir.atomic import write_json
from edgecompile.builddir.hashing import hash_tree, hash_value

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

    @classmethod
    def load(cls, build_dir: Path) -> Manifest:
        path = build_dir / "manifest.json"
        if not path.is_file():
            return cls(path)
        data = json.loads(path.read_text())
        return cls(path, {name: StageRecord(**rec) for name, rec in data.get("stages", {}).items()})

    def save(self) -> None:
        write_json(self.path, {"schema_version": 1, "stages": {k: asdict(v) for k, v in self.stages.items()}})

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

    def record(self, stage: str, record: StageRecord) -> None:
        self.stages[stage] = record
        self.save()
