"""What each stage hands to the stages after it: typed outputs, read from the stage's directory.

A stage's typed output is always rebuilt from its directory and its manifest summary, whether the
stage just ran or was skipped because its inputs did not change: a rerun and a skip hand exactly the
same thing forward. The pipeline keeps these objects and passes the declared ones to each stage
(``Upstream``), so no stage imports another stage's module or reads another stage's files by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompile.backends.base import Artifact
from edgecompile.calibration.ranges import TensorRanges, load_ranges
from edgecompile.errors import InputError
from edgecompile.plan.plan import PrecisionPlan

PLAN_FILE = "plan.json"
RANGES_FILE = "ranges.json"
TRANSFORM_FILE = "transforms.json"
EFFECTIVE_PLAN = "plan.effective.json"
REPORT_FILE = "report.json"


@dataclass(frozen=True)
class ExportedGraphs:
    """export: one float ONNX graph per component, in export order."""

    folder: Path
    files: dict[str, Path]

    @classmethod
    def read(cls, folder: Path, summary: dict[str, Any]) -> ExportedGraphs:
        names = list(summary.get("components", {})) or sorted(p.stem for p in folder.glob("*.onnx"))
        return cls(folder, {name: folder / f"{name}.onnx" for name in names})


@dataclass(frozen=True)
class AnnotatedPlan:
    """annotate: the precision plan."""

    path: Path

    @classmethod
    def read(cls, folder: Path, summary: dict[str, Any]) -> AnnotatedPlan:
        return cls(folder / PLAN_FILE)

    def plan(self) -> PrecisionPlan:
        return PrecisionPlan.load(self.path)


@dataclass(frozen=True)
class TransformedGraphs:
    """transform: the float graphs the later stages read, and what each weight transform changed.

    ``files`` are the transformed graphs, or the exported ones for components no transform touched.
    ``prequantized`` maps component -> a safetensors file of weights a transform already rounded to
    their low-bit grid (GPTQ), with ``layers`` describing them; a backend that can take those codes
    as they are (MatMulNBits) uses them instead of rounding again.
    """

    folder: Path
    files: dict[str, Path]
    transforms: list[str]
    prequantized: dict[str, Path] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path, summary: dict[str, Any]) -> TransformedGraphs:
        record = json.loads((folder / TRANSFORM_FILE).read_text())
        build_dir = folder.parent
        return cls(
            folder,
            {c: build_dir / rel for c, rel in record["graphs"].items()},
            list(record["transforms"]),
            {c: folder / rel for c, rel in record.get("prequantized", {}).items()},
            list(record.get("layers", [])),
        )


@dataclass(frozen=True)
class CalibrationRanges:
    """calibrate: activation ranges per component, measured on the transformed graphs."""

    path: Path

    @classmethod
    def read(cls, folder: Path, summary: dict[str, Any]) -> CalibrationRanges:
        return cls(folder / RANGES_FILE)

    def ranges(self) -> dict[str, TensorRanges]:
        return load_ranges(self.path)

    def keep_schedule(self):  # noqa: ANN201 - edgecompile.pruning.allocation.KeepSchedule | None
        """The token-pruning schedule calibrate wrote (recipe ``token_pruning``), or None."""
        from edgecompile.pruning.allocation import KeepSchedule
        from edgecompile.pruning.recipe_plan import SCHEDULE_FILE

        path = self.path.parent / SCHEDULE_FILE
        return KeepSchedule.from_json(path) if path.is_file() else None


@dataclass(frozen=True)
class BuiltArtifact:
    """build: the artifact directory, its record, and the plan the backend actually applied."""

    folder: Path
    artifact: Artifact
    effective_plan_path: Path

    @classmethod
    def read(cls, folder: Path, summary: dict[str, Any]) -> BuiltArtifact:
        if not (folder / "artifact.json").is_file():
            raise InputError(f"{folder.parent}: no built artifact ({folder / 'artifact.json'}); run 'edgecompile build' first")
        return cls(folder, Artifact.load(folder), folder / EFFECTIVE_PLAN)

    def effective_plan(self) -> PrecisionPlan:
        return PrecisionPlan.load(self.effective_plan_path)


@dataclass(frozen=True)
class ValidationReport:
    """validate: the report with every gate and metric."""

    path: Path

    @classmethod
    def read(cls, folder: Path, summary: dict[str, Any]) -> ValidationReport:
        return cls(folder / REPORT_FILE)

    def load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())


@dataclass
class Upstream:
    """The typed outputs of the stages before this one (None: not declared or not run yet)."""

    export: ExportedGraphs | None = None
    annotate: AnnotatedPlan | None = None
    transform: TransformedGraphs | None = None
    calibrate: CalibrationRanges | None = None
    build: BuiltArtifact | None = None
    validate: ValidationReport | None = None

    def graphs(self) -> dict[str, Path]:
        """The float graphs to quantize: transformed where a transform ran, else exported."""
        if self.transform is not None:
            return self.transform.files
        assert self.export is not None, "a stage reading float graphs must declare 'export'"
        return self.export.files


# What each stage's directory holds, by stage name (reading a build needs no stage module).
OUTPUT_TYPES: dict[str, type] = {
    "export": ExportedGraphs,
    "annotate": AnnotatedPlan,
    "transform": TransformedGraphs,
    "calibrate": CalibrationRanges,
    "build": BuiltArtifact,
    "validate": ValidationReport,
}
