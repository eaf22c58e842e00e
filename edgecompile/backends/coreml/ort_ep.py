"""ONNX Runtime's CoreML execution provider as a CoreML option: FP16 ONNX graphs, float plans only.

The CoreML EP hands supported float subgraphs to CoreML and leaves the rest on ORT's CPU kernels;
it does not execute Q/DQ graphs, so a plan with INT8/INT4 nodes is refused here. The build reports
the static partition coverage that onnxruntime's own mobile usability checker computes
(``onnxruntime.tools.mobile_helpers.usability_checker.check_coreml_partitions`` over the ML
Program op list), because the EP itself only exists in macOS/iOS builds of onnxruntime.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgecompile.backends.base import PROTOBUF_LIMIT, Artifact, BuildInputs, refuse_in_memory_over_limit
from edgecompile.errors import BackendUnavailable, InputError
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs


def fp16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The whole graph in FP16 with float32 inputs/outputs, in graph order (the converter appends its Casts)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgecompile.backends.common.graph_tidy import topological_sort

    return topological_sort(convert_float_to_float16(model, keep_io_types=True))


def partition_coverage(model: onnx.ModelProto) -> dict[str, Any]:
    """Nodes, supported nodes, partitions and unsupported ops for the CoreML EP (ML Program)."""
    from onnxruntime.tools.mobile_helpers.usability_checker import check_coreml_partitions

    info = check_coreml_partitions(onnx.shape_inference.infer_shapes(model), False, "coreml_supported_mlprogram_ops.md")
    return {
        "nodes": info.num_nodes,
        "supported_nodes": info.num_supported_nodes,
        "coverage": info.num_supported_nodes / info.num_nodes if info.num_nodes else 0.0,
        "partitions": info.num_partitions,
        "unsupported_ops": sorted(info.unsupported_ops),
        "suitability": info.suitability().name,
    }


def build_ort_coreml_ep(inputs: BuildInputs) -> Artifact:
    integer = [e for e in inputs.plan.entries if e.precision in ("int8", "int4")]
    if integer:
        raise InputError(f"backend_options.coreml_format: ort-coreml-ep runs float (FP16) graphs only, and the plan quantizes {len(integer)} nodes (e.g. {integer[0].component}/{integer[0].node}); use precision_preset: fp16")
    files: dict[str, str] = {}
    metrics: dict[str, Any] = {}
    for component, source in inputs.exported.items():
        refuse_in_memory_over_limit(source, component, "coreml (ort-coreml-ep)", limit=2 * PROTOBUF_LIMIT, why="its FP16 graph is written as one protobuf")
        model = fp16_graph(onnx.load(str(source)))
        name = f"{component}.fp16.onnx"
        onnx.save(model, str(inputs.out_dir / name))
        files[component] = name
        coverage = partition_coverage(model)
        for key, value in coverage.items():
            metrics[f"ort_coreml_ep.{component}.{key}"] = value
    here = platform.system() == "Darwin"
    note = "ONNX Runtime CoreML EP partition coverage is static (onnxruntime's usability checker); the EP itself exists only in Apple builds of onnxruntime"
    return Artifact("coreml", files, runs_here=here, where="ONNX Runtime CoreML EP" if here else f"not executed: ONNX Runtime's CoreML EP needs macOS (built on {platform.system()})", notes=[note], extra={"format": "ort-coreml-ep", "partition_metrics": metrics})


def ort_coreml_runner(artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
    import onnxruntime as ort

    if "CoreMLExecutionProvider" not in ort.get_available_providers():
        raise BackendUnavailable("this onnxruntime build has no CoreMLExecutionProvider")
    sessions: dict[str, Any] = {}

    def run(component: str, feeds: Feeds) -> Outputs:
        if component not in sessions:
            providers = [("CoreMLExecutionProvider", {"ModelFormat": "MLProgram"}), "CPUExecutionProvider"]
            sessions[component] = ort.InferenceSession(str(artifact_dir / artifact.components[component]), providers=providers)
        session = sessions[component]
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name for i in session.get_inputs()}
        return dict(zip(names, session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in wanted}), strict=True))

    return run
