"""The backend contract: availability, plan adaptation, build, and a runner for validation."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edgecompile.calibration.ranges import TensorRanges
from edgecompile.config.target import Strict, Target
from edgecompile.models.adapter import ComponentRunner, Feeds
from edgecompile.plan.plan import PrecisionPlan


@dataclass(frozen=True)
class Availability:
    """Whether a backend can build here, run here, and why not."""

    can_build: bool
    can_run: bool
    reason: str


@dataclass
class Artifact:
    """What a build produced: one file per component, plus what the backend wants remembered."""

    backend: str
    components: dict[str, str]  # component -> file name relative to the artifact dir
    runs_here: bool
    where: str
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        (directory / "artifact.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, directory: Path) -> Artifact:
        return cls(**json.loads((directory / "artifact.json").read_text()))


@dataclass(frozen=True)
class BuildInputs:
    """Everything a backend's build reads."""

    exported: dict[str, Path]  # component -> float ONNX file (after the weight transforms, if any)
    plan: PrecisionPlan
    ranges: dict[str, TensorRanges]
    target: Target
    recipe: Any  # edgecompile.config.recipe.Recipe
    out_dir: Path
    # component -> fresh iterator over the recipe's calibration samples as that component's feeds
    # (batch 1): for backends that calibrate again on a graph they rewrote (QNN) and for weight
    # transforms that need activations (GPTQ). None: not available.
    calibration_feeds: Callable[[str], Iterable[Feeds]] | None = None
    # Backends that convert from torch rather than from ONNX (CoreML) load the model themselves.
    model_dir: Path | None = None
    adapter: Any = None  # edgecompile.models.adapter.ModelAdapter
    # component -> safetensors file of weights a transform already rounded (GPTQ): see
    # edgecompile.transforms.prequantized. Backends that pack those codes as they are use them.
    prequantized: dict[str, Path] = field(default_factory=dict)


def artifact_bytes(path: Path) -> int:
    """Size of one artifact file, or of a bundle directory (a CoreML .mlpackage) summed over its files."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


class NoOptions(Strict):
    """A backend that takes no ``backend_options``: any key is a typo."""


class Backend(ABC):
    """One way of producing and running an artifact."""

    name: str
    description: str
    # The schema of this backend's ``backend_options`` (target's, then the recipe's on top): unknown
    # keys and bad values are refused at recipe load with file:line, never built with a default.
    options_model: type[Strict] = NoOptions

    @abstractmethod
    def availability(self) -> Availability: ...

    def adapt_plan(self, plan: PrecisionPlan, target: Target, ranges: dict[str, TensorRanges], graphs: dict[str, onnx.ModelProto]) -> PrecisionPlan:
        """Map the plan onto what ``target`` executes; every change is recorded with its reason.

        Shared rule: a node planned FP16 whose calibrated output range overflows FP16 stays FP32
        (the decomposed LayerNorm's Pow is the classic case); FP16 on hardware without FP16
        arithmetic runs in float32.
        """
        outputs = {c: {n.name: list(n.output) for n in g.graph.node} for c, g in graphs.items()}
        for entry in plan.entries:
            if entry.precision != "fp16":
                continue
            component_ranges = ranges.get(entry.component)
            overflow = component_ranges is not None and any(component_ranges.overflows_fp16(t) for t in outputs.get(entry.component, {}).get(entry.node, []))
            if overflow:
                plan = plan.with_change(entry.component, entry.node, "fp32", "FP16 safety: calibrated range exceeds 65504")
            elif not target.executes("fp16"):
                plan = plan.with_change(entry.component, entry.node, "float", f"target {target.name} has no native FP16; weights stored in FP16, computed in float32")
        for entry in plan.entries:
            if entry.precision in ("int8", "int4") and not target.executes(entry.precision):
                plan = plan.with_change(entry.component, entry.node, "float", f"target {target.name} does not execute {entry.precision}")
        return plan

    @abstractmethod
    def build(self, inputs: BuildInputs) -> Artifact: ...

    @abstractmethod
    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        """A function running one component of the artifact on this machine."""

    def runtime_kind(self, artifact: Artifact) -> str:
        """What this backend's runner is here: "native" (its own runtime), "emulator" or "stand_in".

        Validation uses it with the target's architecture to decide which metrics are the device's
        (edgecompile.validation.execution); a backend whose runner is not the device's runtime says so.
        """
        return "native"

    def structural_check(self, artifact_dir: Path, artifact: Artifact) -> dict[str, Any]:
        """Metrics that can be checked without executing the artifact (backends that cannot run here)."""
        return {}
