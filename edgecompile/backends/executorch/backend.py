"""ExecuTorch + XNNPACK: one ``.pte`` per component, built from the torch modules, run here for real.

Build, per component (``inputs.adapter.components``, the same modules the ONNX export traced):

1. the plan's INT8/INT4 entries are mapped onto the component's torch modules by module path
   (:mod:`.plan_map`);
2. the component is exported with ``torch.export`` at batch 1 with bounded dynamic sequence/past
   lengths (:mod:`.shapes`);
3. the plan is applied with ExecuTorch's XNNPACK quantizer through pt2e (static W8A8, calibrated on
   the recipe's calibration feeds) or, where the plan asks INT4, torchao's 8da4w (:mod:`.quantize`);
4. the program is lowered with ``XnnpackPartitioner`` and written as ``<component>.pte``
   (:mod:`.lower`); the written file is read back to record what its delegates hold
   (:mod:`.program_info`), and it is executed once on the example inputs against the float module.

The runner (:mod:`.runner`) executes the ``.pte`` files with ``executorch.runtime``. On this x86-64
host that is ExecuTorch's own runtime with XNNPACK's x86 kernels: accuracy and drift are the
artifact's; latency and memory are this host's, not an arm64 phone's (the target's ``arch`` makes
validation label them so).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np

from pydantic import Field

from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs
from edgecompile.config.target import Strict
from edgecompile.errors import InputError
from edgecompile.models.adapter import ComponentRunner

MISSING = "executorch is not installed (pip install executorch)"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denominator) if denominator else float(np.array_equal(a, b))


class ExecuTorchOptions(Strict):
    """``backend_options`` for the executorch backend."""

    executorch_max_length: int | None = Field(default=None, ge=2, le=131072)  # upper bound of sequence/past lengths


class ExecuTorchBackend(Backend):
    name = "executorch"
    options_model = ExecuTorchOptions
    description = "ExecuTorch .pte with the XNNPACK delegate (pt2e static INT8, torchao 8da4w INT4); runs through executorch.runtime"

    def availability(self) -> Availability:
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: F401
            from executorch.runtime import Runtime
        except ImportError:
            return Availability(False, False, MISSING)
        try:
            import torchao  # noqa: F401
        except ImportError:
            return Availability(False, False, "torchao is not installed (pip install torchao): ExecuTorch's quantizers need it")
        from executorch.version import __version__

        registered = Runtime.get().backend_registry.registered_backend_names
        runs = "XnnpackBackend" in registered
        reason = f"executorch {__version__}, XNNPACK delegate " + ("registered" if runs else f"not registered in this runtime (have: {', '.join(registered)})")
        return Availability(True, runs, reason + f"; runs on this {platform.machine()} host, latency is not an arm64 device's")

    def build(self, inputs: BuildInputs) -> Artifact:
        if inputs.model_dir is None or inputs.adapter is None:
            raise InputError("the executorch backend exports from the torch model: the build needs the model directory and adapter (BuildInputs.model_dir/adapter)")
        from edgecompile.backends.executorch.lower import lower_to_xnnpack, quiet
        from edgecompile.backends.executorch.plan_map import quant_targets
        from edgecompile.backends.executorch.program_info import program_summary
        from edgecompile.backends.executorch.quantize import pt2e_static_int8, torchao_dynamic
        from edgecompile.backends.executorch.shapes import batch_axes, bounds, example_inputs, export_component, max_length

        options = {**inputs.target.backend_options, **inputs.recipe.backend_options}
        loaded = inputs.adapter.load(Path(inputs.model_dir))
        length = max_length(loaded.config, options.get("executorch_max_length"))
        calibration_samples = int(inputs.recipe.calibration.samples)
        files: dict[str, str] = {}
        extra: dict[str, Any] = {"max_length": length, "io": {}, "quantization": {}, "programs": {}, "planned_integer_entries": {}, "parity_cosine": {}}
        notes: list[str] = []
        for spec in inputs.adapter.components(loaded):
            if spec.name not in inputs.exported:
                continue
            entries = inputs.plan.for_component(spec.name)
            targets = quant_targets(spec.module, entries)
            extra["planned_integer_entries"][spec.name] = {"int8": sum(e.precision == "int8" for e in entries), "int4": sum(e.precision == "int4" for e in entries), "matched": len(targets.int8) + len(targets.int4)}
            if targets.unmatched:
                notes.append(f"{spec.name}: {len(targets.unmatched)} integer plan entries name no Linear/Conv of the torch module and stay float: {', '.join(targets.unmatched[:5])}")
            label_bounds = bounds(spec, length)
            example = example_inputs(spec)
            module = spec.module.eval()
            with quiet():
                if targets.int4:
                    module, record, changed = torchao_dynamic(module, targets)
                    notes += [f"{spec.name}: {n}" for n in changed]
                    program, label_bounds = export_component(module, spec, example, label_bounds)
                elif targets.int8:
                    program, label_bounds = export_component(module, spec, example, label_bounds)
                    feeds = inputs.calibration_feeds(spec.name) if inputs.calibration_feeds is not None else iter(())
                    quantized, record = pt2e_static_int8(program, targets, feeds, spec.input_names, calibration_samples)
                    program, label_bounds = export_component(quantized, spec, example, label_bounds)
                else:
                    record = {"method": "float (no INT8/INT4 entries in the plan)"}
                    program, label_bounds = export_component(module, spec, example, label_bounds)
            pte, lowered = lower_to_xnnpack(program)
            name = f"{spec.name}.pte"
            (inputs.out_dir / name).write_bytes(pte)
            files[spec.name] = name
            extra["quantization"][spec.name] = record
            extra["programs"][spec.name] = {**program_summary(inputs.out_dir / name), **lowered}
            extra["io"][spec.name] = {
                "inputs": list(spec.input_names),
                "outputs": list(spec.output_names),
                "dynamic_axes": {n: {str(a): label for a, label in axes.items()} for n, axes in spec.dynamic_axes.items()},
                "bounds": {label: list(b) for label, b in label_bounds.items()},
                "batch_axes": batch_axes(spec),
            }
            extra["parity_cosine"][spec.name] = self._parity(inputs.out_dir, files, extra, spec, example)
        notes += self._plan_notes(inputs, extra)
        where = f"ExecuTorch XNNPACK on {platform.machine()} {platform.system()} (executorch.runtime, real XNNPACK kernels); latency and memory on this host are not the {inputs.target.arch} device's"
        return Artifact(self.name, files, runs_here=self.availability().can_run, where=where, notes=notes, extra=extra)

    def _parity(self, out_dir: Path, files: dict[str, str], extra: dict[str, Any], spec: Any, example: tuple[Any, ...]) -> float:
        """Worst output cosine of the written .pte vs the float torch module on the example inputs (batch 1)."""
        import torch

        from edgecompile.backends.executorch.runner import executorch_runner

        artifact = Artifact(self.name, dict(files), True, "", [], extra)
        feeds = {n: t.numpy() for n, t in zip(spec.input_names, example, strict=True)}
        got = executorch_runner(out_dir, artifact)(spec.name, feeds)
        with torch.no_grad():
            expected = spec.module.eval()(*example)
        expected = expected if isinstance(expected, (tuple, list)) else (expected,)
        return min(_cosine(e.numpy(), got[n]) for n, e in zip(spec.output_names, expected, strict=True))

    @staticmethod
    def _plan_notes(inputs: BuildInputs, extra: dict[str, Any]) -> list[str]:
        """Every place where the artifact differs from the plan or the recipe, with the reason."""
        q = inputs.recipe.quantization
        notes = [
            f"latency and memory are measured on this {platform.machine()} host with XNNPACK's x86 kernels: they are not the {inputs.target.arch} device's (run 'edgecompile validate --build DIR' on the device)",
            "plan entries left in float (FP16-planned patch embedding and projector, FP32 norms and softmax) compute and store in FP32: the target executes no FP16",
            f"programs are exported at batch 1 with sequence lengths up to {extra['max_length']} (past up to {extra['max_length'] - 1}); larger batches run one sample at a time",
        ]
        methods = {c: r["method"] for c, r in extra["quantization"].items()}
        if any(m.startswith("pt2e") for m in methods.values()):
            notes.append(
                f"INT8 (W8A8) entries: XNNPACKQuantizer via pt2e, INT8 symmetric weights and INT8 asymmetric activations (the recipe's {q.activation_type} asymmetric has the same 256 levels),"
                f" ranges observed by pt2e's HistogramObserver on {inputs.recipe.calibration.samples} calibration samples, not the calibrate stage's {inputs.recipe.calibration.method} ranges (those are ONNX tensor ranges)"
            )
        for component, method in methods.items():
            if method.startswith("torchao"):
                notes.append(
                    f"{component}: INT4 entries run as 8da4w (INT4 per-block weights, activations quantized to INT8 per token at run time) because XNNPACK has no weight-only INT4 linear;"
                    f" INT8 entries of {component} use dynamic per-token INT8 activations (8da8w) instead of static calibrated ranges (one quantizer per component; the KV-cache decoder's activations vary per step)"
                )
        if any(r.get("int4_modules") for r in extra["quantization"].values()) and q.int4_algorithm != "rtn":
            notes.append(f"INT4 weights are rounded to nearest by torchao: the recipe's int4_algorithm '{q.int4_algorithm}' is not applied")
        if q.weight_transforms or inputs.prequantized:
            notes.append(f"weight transforms ({', '.join(q.weight_transforms) or 'prequantized weights'}) were applied to the ONNX graphs; this backend exports the checkpoint's torch modules and does not apply them")
        return notes

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        from edgecompile.backends.executorch.runner import executorch_runner

        if artifact.extra.get("io") is None:  # the probe's float reference (export/*.onnx) is not an ExecuTorch program
            raise InputError(f"{artifact_dir}: not an ExecuTorch artifact (no artifact.json with the components' inputs and outputs)")
        return executorch_runner(artifact_dir, artifact)

    def structural_check(self, artifact_dir: Path, artifact: Artifact) -> dict[str, Any]:
        """Weight storage types read from the .pte files, and how much of the plan's integer entries they hold."""
        from edgecompile.backends.executorch.program_info import program_summary

        metrics: dict[str, Any] = {}
        planned_total = applied_total = 0
        for component, file in artifact.components.items():
            summary = program_summary(artifact_dir / file)
            weights = summary["weights"]
            total = sum(weights.values())
            metrics[f"executorch.{component}.delegates"] = summary["delegates"]
            metrics[f"executorch.{component}.weights"] = weights
            for dtype in ("int8", "int4", "fp32"):
                metrics[f"executorch.{component}.weights_{dtype}_fraction"] = weights.get(dtype, 0) / total if total else 0.0
            planned = int(artifact.extra.get("planned_integer_entries", {}).get(component, {}).get("matched", 0))
            planned_total += planned
            applied_total += min(weights.get("int8", 0) + weights.get("int4", 0), planned)
        metrics["executorch.plan_applied_fraction"] = applied_total / planned_total if planned_total else 1.0
        return metrics
