"""CoreML: one ML Program (.mlpackage) per component, converted from torch, weights compressed per plan.

Conversion and compression run anywhere coremltools installs (Linux included); prediction needs
macOS. On Linux the artifact does not run (``runs_here=False``) and validation reads
:meth:`CoreMlBackend.structural_check` instead: op counts, the dtypes of the linear weights after
compression, how much of the plan was applied, size, and whether inputs/outputs match the exported
components. Accuracy, drift, latency and memory are then not measured, and their gates fail with
"metric could not be computed" — a Linux build of an Apple recipe never passes silently.

CoreML compresses weights, not activations: the plan's INT8 (W8A8) nodes become INT8 per-channel
weights with FP16 activations (W8A16). Activation quantization in coremltools
(``linear_quantize_activations``) calibrates by running the model, which needs macOS.

Recipe option ``backend_options.coreml_format: ort-coreml-ep`` writes FP16 ONNX graphs for ONNX
Runtime's CoreML execution provider instead (float plans only: that EP does not take Q/DQ graphs),
with the EP's static partition coverage from onnxruntime's mobile usability checker.
"""

from __future__ import annotations

import platform
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from edgecompile.config.target import Strict
from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs, artifact_bytes
from edgecompile.errors import BackendUnavailable, InputError
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs

COMPRESSED_OPS = {"constexpr_blockwise_shift_scale", "constexpr_affine_dequantize", "constexpr_lut_to_dense"}
_DTYPES = {"INT8": "int8", "INT4": "int4", "UINT8": "uint8", "UINT4": "uint4", "FLOAT16": "fp16", "FLOAT32": "fp32", "UINT6": "uint6", "UINT2": "uint2", "UINT3": "uint3", "UINT1": "uint1"}


def quiet_import_coremltools():  # noqa: ANN201 - the coremltools module
    """Import coremltools without its import-time chatter on Linux.

    On Linux it logs one "Failed to load _MLModelProxy" line per native proxy and warns about the
    torch version; neither is actionable here (prediction needs macOS, which availability() says).
    """
    import contextlib
    import io
    import logging
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            import coremltools
        finally:
            logging.disable(previous)
    return coremltools


def _onnx_io(path: Path) -> dict[str, list[str]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {"inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}


def _program_ops(spec: Any) -> list[Any]:
    function = spec.mlProgram.functions["main"]
    return list(function.block_specializations[function.opset].operations)


def _tensor_dtype(value_type: Any) -> str:
    from coremltools.proto import MIL_pb2

    return _DTYPES.get(MIL_pb2.DataType.Name(value_type.tensorType.dataType), MIL_pb2.DataType.Name(value_type.tensorType.dataType).lower())


def program_summary(mlpackage: Path) -> dict[str, Any]:
    """Op counts and the storage dtype of every linear/conv/matmul weight of one ML Program."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(mlpackage))
    ops = _program_ops(spec)
    producer = {out.name: op for op in ops for out in op.outputs}
    weights: list[str] = []
    for op in ops:
        if op.type not in ("linear", "conv", "matmul") or ("weight" not in op.inputs and "y" not in op.inputs):
            continue
        binding = (op.inputs["weight"] if "weight" in op.inputs else op.inputs["y"]).arguments[0]
        if binding.HasField("value"):
            weights.append(_tensor_dtype(binding.value.type))
            continue
        source = producer.get(binding.name)
        if source is None:
            continue  # an activation operand (attention matmuls), not a weight
        if source.type in COMPRESSED_OPS:
            key = "data" if "data" in source.inputs else "indices"
            data = source.inputs[key].arguments[0] if key in source.inputs else None
            if data is not None and data.HasField("value"):
                dtype = _tensor_dtype(data.value.type)
            else:
                data_op = producer.get(data.name) if data is not None else None
                dtype = _tensor_dtype(data_op.outputs[0].type) if data_op is not None else "unknown"
            weights.append(f"palettized-{dtype}" if source.type == "constexpr_lut_to_dense" else dtype)
        elif source.type == "const":
            weights.append(_tensor_dtype(source.outputs[0].type))
    description = spec.description
    return {
        "ops": dict(sorted(Counter(op.type for op in ops).items())),
        "weights": dict(Counter(weights)),
        "inputs": [i.name for i in description.input],
        "outputs": [o.name for o in description.output],
        "bytes": artifact_bytes(mlpackage),
    }


def pad_empty_past(feeds: Feeds) -> tuple[Feeds, bool]:
    """A decoder call with an empty KV cache, given one masked slot instead (CoreML has no 0-size dims).

    The converted decoder's ``past_*`` inputs take 1..n cache slots. The first prefill has none, so
    one zero slot is put in front with ``attention_mask`` 0 there: the slot is never attended to
    and the result is the same; :func:`crop_padded_present` drops it from the returned cache.
    """
    past = [k for k in feeds if k.startswith("past_")]
    if not past or any(feeds[k].shape[2] != 0 for k in past) or "attention_mask" not in feeds:
        return feeds, False
    out = dict(feeds)
    for k in past:
        shape = list(feeds[k].shape)
        shape[2] = 1
        out[k] = np.zeros(shape, dtype=feeds[k].dtype)
    mask = feeds["attention_mask"]
    out["attention_mask"] = np.concatenate([np.zeros((*mask.shape[:-1], 1), dtype=mask.dtype), mask], axis=-1)
    return out, True


def crop_padded_present(outputs: Outputs) -> Outputs:
    """The returned cache without the slot :func:`pad_empty_past` added."""
    return {k: (v[:, :, 1:] if k.startswith("present_") else v) for k, v in outputs.items()}


class CoreMlOptions(Strict):
    """``backend_options`` for the coreml backend."""

    coreml_format: Literal["mlprogram", "ort-coreml-ep"] = "mlprogram"
    coreml_palettize_bits: Literal[1, 2, 3, 4, 6, 8] | None = None
    coreml_deployment_target: str = "macOS15"  # checked against coremltools' targets when converting
    coreml_compute_precision: Literal["fp16", "fp32"] = "fp16"


class CoreMlBackend(Backend):
    name = "coreml"
    options_model = CoreMlOptions
    description = "Apple CoreML ML Program (coremltools): FP16 compute, INT8/INT4/palettized weights; runs on macOS"

    def availability(self) -> Availability:
        try:
            ct = quiet_import_coremltools()
        except ImportError:
            return Availability(False, False, "coremltools is not installed (pip install coremltools)")
        here = platform.system() == "Darwin"
        return Availability(True, here, f"coremltools {ct.__version__}" + ("" if here else f"; prediction needs macOS, this is {platform.system()} (build and structural checks only)"))

    def build(self, inputs: BuildInputs) -> Artifact:
        options = {**inputs.target.backend_options, **inputs.recipe.backend_options}
        if options.get("coreml_format", "mlprogram") == "ort-coreml-ep":
            from edgecompile.backends.coreml.ort_ep import build_ort_coreml_ep

            return build_ort_coreml_ep(inputs)
        if inputs.model_dir is None or inputs.adapter is None:
            raise InputError("the coreml backend converts from the torch model: the build needs the model directory and adapter (BuildInputs.model_dir/adapter)")
        from edgecompile.backends.coreml.convert import compress, convert

        loaded = inputs.adapter.load(Path(inputs.model_dir))
        palettize = options.get("coreml_palettize_bits")
        if palettize is not None and palettize not in (1, 2, 3, 4, 6, 8):
            raise InputError(f"backend_options.coreml_palettize_bits: expected one of 1, 2, 3, 4, 6, 8, got {palettize!r}")
        deployment = str(options.get("coreml_deployment_target", "macOS15"))
        compute = str(options.get("coreml_compute_precision", "fp16"))
        files: dict[str, str] = {}
        applied: dict[str, dict[str, str]] = {}
        expected_io = {c: _onnx_io(p) for c, p in inputs.exported.items()}
        for spec in inputs.adapter.components(loaded):
            entries = inputs.plan.for_component(spec.name)
            model = convert(spec, entries, deployment, compute)
            model, chosen = compress(model, entries, palettize)
            name = f"{spec.name}.mlpackage"
            model.save(str(inputs.out_dir / name))
            files[spec.name] = name
            applied[spec.name] = chosen
        planned = {c: sum(1 for e in inputs.plan.for_component(c) if e.precision in ("int8", "int4")) for c in files}
        notes = [
            "INT8 plan entries are INT8 per-channel weights with FP16 activations (W8A16): CoreML's activation quantization calibrates by running the model, which needs macOS",
            f"minimum deployment target {deployment}, compute precision {compute}",
        ]
        here = platform.system() == "Darwin"
        where = f"CoreML on {platform.machine()} macOS" if here else f"not executed: CoreML prediction needs macOS (built on {platform.system()} {platform.machine()})"
        return Artifact(self.name, files, runs_here=here, where=where, notes=notes, extra={"expected_io": expected_io, "compressed": applied, "planned_integer_entries": planned, "palettize_bits": palettize})

    def structural_check(self, artifact_dir: Path, artifact: Artifact) -> dict[str, Any]:
        if artifact.extra.get("format") == "ort-coreml-ep":
            return dict(artifact.extra.get("partition_metrics", {}))
        metrics: dict[str, Any] = {}
        all_match = True
        planned_total = applied_total = 0
        for component, file in artifact.components.items():
            summary = program_summary(artifact_dir / file)
            expected = artifact.extra.get("expected_io", {}).get(component, {})
            io_match = summary["inputs"] == expected.get("inputs") and summary["outputs"] == expected.get("outputs")
            all_match &= io_match
            total = sum(summary["weights"].values())
            metrics[f"coreml.{component}.ops"] = summary["ops"]
            metrics[f"coreml.{component}.op_count"] = sum(summary["ops"].values())
            metrics[f"coreml.{component}.weights"] = summary["weights"]
            metrics[f"coreml.{component}.linear_weights"] = total
            for dtype in ("int8", "int4", "fp16", "fp32"):
                metrics[f"coreml.{component}.weights_{dtype}_fraction"] = summary["weights"].get(dtype, 0) / total if total else 0.0
            metrics[f"coreml.{component}.io_match"] = 1.0 if io_match else 0.0
            planned = int(artifact.extra.get("planned_integer_entries", {}).get(component, 0))
            compressed = sum(n for d, n in summary["weights"].items() if d in ("int8", "int4") or d.startswith("palettized"))
            planned_total += planned
            applied_total += min(compressed, planned)
        metrics["coreml.io_match"] = 1.0 if all_match else 0.0
        metrics["coreml.plan_applied_fraction"] = applied_total / planned_total if planned_total else 1.0
        return metrics

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        if platform.system() != "Darwin":
            raise BackendUnavailable(f"CoreML prediction needs macOS; this is {platform.system()}")
        if artifact.extra.get("format") == "ort-coreml-ep":
            from edgecompile.backends.coreml.ort_ep import ort_coreml_runner

            return ort_coreml_runner(artifact_dir, artifact)
        import coremltools as ct

        models: dict[str, Any] = {}

        def run(component: str, feeds: Feeds) -> Outputs:
            if component not in models:
                models[component] = ct.models.MLModel(str(artifact_dir / artifact.components[component]), compute_units=ct.ComputeUnit.ALL)
            model = models[component]
            feeds, padded = pad_empty_past(feeds)
            kinds = {i.name: i.type.multiArrayType.dataType for i in model.get_spec().description.input}
            cast = {65568: np.float32, 65552: np.float16, 131104: np.int32}  # ArrayFeatureType.ArrayDataType values
            prepared = {k: np.ascontiguousarray(v.astype(cast.get(kinds[k], v.dtype))) for k, v in feeds.items() if k in kinds}
            outputs = {k: np.asarray(v, dtype=np.float32) for k, v in model.predict(prepared).items()}
            return crop_padded_present(outputs) if padded else outputs

        return run

