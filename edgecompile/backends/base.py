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
    # The recipe's token_pruning as calibrate scheduled it (edgecompile.pruning.allocation.KeepSchedule,
    # score weights in its inputs; residual bits in recipe.token_pruning); None: no pruning. Only ORT CPU executes it.
    token_pruning: Any = None


def external_data_files(model_path: Path) -> list[Path]:
    """The external-data files an ONNX graph's initializers point at (resolved next to the graph).

    Read from the graph without loading its weights, so graphs over 2 GiB cost a few kilobytes.
    A location that escapes the graph's folder or does not exist is refused: a size that silently
    leaves weights out is the bug this guards against.
    """
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    model = onnx.load(str(model_path), load_external_data=False)
    folder = model_path.parent.resolve()
    files: dict[Path, None] = {}
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = (folder / ExternalDataInfo(tensor).location).resolve()
        if folder not in location.parents or not location.is_file():
            raise FileNotFoundError(f"{model_path}: initializer {tensor.name}: external data '{ExternalDataInfo(tensor).location}' is not a file in {folder}")
        files[location] = None
    return list(files)


def artifact_bytes(path: Path) -> int:
    """Size of one artifact file with the files it needs, or of a bundle directory (a CoreML .mlpackage).

    An ONNX graph counts its external-data files too (graphs over 2 GiB keep their weights there);
    leaving them out made a decoder's compression ratio read 0.75 instead of 2.97.
    """
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    size = path.stat().st_size
    if path.suffix == ".onnx":
        size += sum(f.stat().st_size for f in external_data_files(path))
    return size


def _drop_rewriter_state() -> None:
    """Forget the last graph onnxscript's pattern matchers saw.

    torch.onnx's exporter optimizes with onnxscript's rewrite rules, module-level objects whose
    ``SimplePatternMatcher`` keeps the graph of its last match; that graph's initializers wrap the
    torch parameters, so the whole torch model stayed alive after export even once the build let
    it go (measured: 0.9 GB of parameters still referenced on a 1 GB LLaVA). Every ``match`` call
    sets these fields again, so clearing them between stages changes nothing else.
    """
    import gc
    import sys

    matcher = sys.modules.get("onnxscript.rewriter._matcher")
    kind = getattr(matcher, "SimplePatternMatcher", None)
    if kind is None:
        return
    for obj in gc.get_objects():
        if isinstance(obj, kind):
            for name in ("_graph", "_current_node", "_match", "_tracer"):
                if name in vars(obj):
                    setattr(obj, name, None)


def release_memory() -> None:
    """Collect garbage, then hand the C heap's free pages back to the system (glibc ``malloc_trim``).

    A build runs every stage in one process, and the per-stage peak RSS counts what the stages
    before left behind: protobuf, numpy and onnxruntime free tens-of-megabyte blocks into glibc's
    heaps, which keep them resident (measured: 4.5 GB resident entering build after calibrate on a
    1 GB LLaVA, most of it freed memory). Called between the big steps of build and validate.
    A no-op where the C library has no ``malloc_trim`` (macOS, musl).
    """
    import ctypes
    import ctypes.util
    import gc

    _drop_rewriter_state()
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


PROTOBUF_LIMIT = 2**31  # one serialized ONNX graph, weights included


def refuse_in_memory_over_limit(source: Path, component: str, backend: str, limit: int = PROTOBUF_LIMIT, why: str = "it rewrites and serializes graphs in memory") -> None:
    """Refuse, with the file and the size, a graph a backend can only handle in one protobuf (under 2 GiB).

    Called before any work, so the failure is a clear input error (exit 3), not an ``EncodeError``
    deep inside a quantizer after minutes of work.
    """
    from edgecompile.errors import InputError

    size = artifact_bytes(source)
    if size > limit:
        raise InputError(f"{source}: component {component} is {size / 2**30:.2f} GiB with its external data; the {backend} backend cannot build it ({why}; limit {limit / 2**30:.0f} GiB). Use the ort-cpu backend, or a smaller model")


class NoOptions(Strict):
    """A backend that takes no ``backend_options``: any key is a typo."""


class Backend(ABC):
    """One way of producing and running an artifact."""

    name: str
    description: str
    # The schema of this backend's ``backend_options`` (target's, then the recipe's on top): unknown
    # keys and bad values are refused at recipe load with file:line, never built with a default.
    options_model: type[Strict] = NoOptions
    # Precisions this backend's gather kernels read an embedding table in (ORT CPU: INT4
    # GatherBlockQuantized). A Gather the plan quantizes anywhere else stays float, with the reason.
    quantized_gather: frozenset[str] = frozenset()
    # Whether the backend builds the plan's role kv_cache INT8 (a quantized cache in the decoder's I/O).
    int8_kv_cache: bool = False

    @abstractmethod
    def availability(self) -> Availability: ...

    def preflight(self, adapter: Any, resolved: Any) -> None:
        """Refuse, when the recipe is bound to a model, a model this backend cannot build (exit 3).

        Called by ``BuildContext.create`` before any stage runs, so a combination the backend
        does not support costs nothing (no export, calibration or build directory). ``adapter``
        is the model's ``ModelAdapter`` (``family``, ``components``), ``resolved`` the
        ``ResolvedRecipe`` (recipe, target, recipe_path). The default accepts everything.
        """

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
            if entry.op_type == "Gather" and entry.precision in ("int8", "int4") and entry.precision not in self.quantized_gather:
                plan = plan.with_change(entry.component, entry.node, "float", f"backend {self.name} has no {entry.precision} gather kernel: the embedding table stays float")
        for entry in plan.entries:
            if entry.role == "kv_cache" and entry.precision == "int8" and not self.int8_kv_cache:
                plan = plan.with_change(entry.component, entry.node, "fp32", f"backend {self.name} keeps the KV cache in float (an INT8 cache is built for ort-cpu only)")
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
