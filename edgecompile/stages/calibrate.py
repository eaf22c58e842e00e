"""calibrate: activation ranges for every tensor the plan quantizes, streamed, saved for reuse."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx

from edgecompile.backends.base import release_memory
from edgecompile.calibration.ranges import TensorRanges, save_ranges
from edgecompile.calibration.streaming import calibrate_component
from edgecompile.errors import InputError
from edgecompile.plan.plan import PrecisionPlan
from edgecompile.data.sources import calibration_fingerprint, calibration_samples
from edgecompile.stages.base import Stage
from edgecompile.stages.context import BuildContext
from edgecompile.stages.results import RANGES_FILE, CalibrationRanges, Upstream
from edgecompile.weightless_graph import WeightlessGraph

def tensors_to_calibrate(model: onnx.ModelProto, plan: PrecisionPlan, component: str) -> list[str]:
    """Activations feeding or leaving INT8 nodes, and outputs of FP16 nodes (for FP16 safety)."""
    constants = {t.name for t in model.graph.initializer} | {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    inferred = onnx.shape_inference.infer_shapes(model)
    float_tensors = {v.name for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output) if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    wanted = {e.node: e.precision for e in plan.for_component(component) if e.precision in ("int8", "fp16") and e.role != "kv_cache"}  # cache scales: backends/ort_cpu/kv_cache.py
    wanted |= {e.node: "int8" for e in plan.for_component(component) if e.precision == "int4" and e.activations == "static"}  # W4A8 static: INT8 inputs
    tensors: list[str] = []
    for node in model.graph.node:
        precision = wanted.get(node.name)
        if precision is None:
            continue
        names = list(node.output) + (list(node.input[:1]) if precision == "int8" else [])
        tensors += [t for t in names if t and t in float_tensors and t not in constants and t not in tensors]  # shapes and indices have no range
    return tensors


class CalibrateStage(Stage):
    name = "calibrate"
    requires = ("export", "annotate", "transform")
    output_type = CalibrationRanges

    def inputs(self, ctx: BuildContext) -> dict[str, Any]:
        c = ctx.recipe.calibration
        pruning = ctx.recipe.token_pruning
        return {"calibration": c.model_dump_json(), "set": calibration_fingerprint(c.set), "act_sym": ctx.recipe.quantization.activation_symmetric,
                **({"token_pruning": pruning.model_dump_json()} if pruning is not None else {})}

    def run(self, ctx: BuildContext, out: Path, upstream: Upstream) -> dict[str, Any]:
        c = ctx.recipe.calibration
        plan = upstream.annotate.plan()
        per_component: dict[str, TensorRanges] = {}
        release_memory()  # what export left behind (the exporter's graph, which holds the torch weights)
        for component, path in upstream.graphs().items():
            with tempfile.TemporaryDirectory(prefix="edgecompile-calibrate-") as scratch:
                per_component |= self._calibrate_one(ctx, plan, component, path, Path(scratch))
            release_memory()  # one component's graph and session at a time
        save_ranges(out / RANGES_FILE, per_component)
        summary = {"method": c.method, "set": c.set, "tensors": {k: len(v.ranges) for k, v in per_component.items()}, "samples": {k: v.samples for k, v in per_component.items()}}
        if ctx.recipe.token_pruning is not None:
            summary["token_pruning"] = self._keep_schedule(ctx, out)
        return summary

    def _keep_schedule(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """QUOTA's offline half (seed 003): the keep schedule from this calibration set, written beside the ranges."""
        from edgecompile.pruning.recipe_plan import SCHEDULE_FILE, plan_schedule

        section, c = ctx.recipe.token_pruning, ctx.recipe.calibration
        loaded = ctx.loaded()
        image_tokens = ctx.adapter.image_tokens(loaded)
        samples = calibration_samples(c.set, min(section.sensitivity.samples, c.samples))
        schedule = plan_schedule(ctx.recipe, ctx.adapter, loaded, ctx.model_dir, samples, image_tokens)
        schedule.to_json(out / SCHEDULE_FILE)
        return {"layers": list(schedule.layers), "keep_ratios": [round(r, 4) for r in schedule.keep_ratios], "budgets": list(schedule.budgets()), "image_tokens": image_tokens}

    def _calibrate_one(self, ctx: BuildContext, plan: PrecisionPlan, component: str, path: Path, scratch: Path) -> dict[str, TensorRanges]:
        """Ranges of one component's graph, held without its weights.

        Shape inference, the exposed copy and the session never need the weights in this process's
        protobuf: a graph with external data is loaded without it, and a graph with embedded weights
        (under 2 GiB) has them moved once to a scratch file that onnxruntime reads. Held embedded,
        the graph, its exposed copy and the serialized bytes were three copies of the weights at
        once (calibrate's peak on the 0.5 B proxy).
        """
        c = ctx.recipe.calibration
        graph = WeightlessGraph.open(path, scratch, component)
        tensors = tensors_to_calibrate(graph.model, plan, component)
        if not tensors:
            return {}
        feeds = ctx.adapter.calibration_feeds(ctx.loaded(), calibration_samples(c.set, c.samples), component)
        try:
            return {component: calibrate_component(
                graph.model, tensors, feeds, method=c.method, symmetric=ctx.recipe.quantization.activation_symmetric, bins=c.bins, percentile=c.percentile, external_data_dir=graph.folder
            )}
        except ValueError as exc:
            if "no inputs" not in str(exc):
                raise
            raise InputError(f"{ctx.resolved.recipe_path}: calibration.set: '{c.set}' yields no samples for component {component} (it needs {'images' if 'vision' in component else 'text'})") from None
