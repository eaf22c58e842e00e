"""ONNX Runtime CPU: Q/DQ INT8 (W8A8) and MatMulNBits INT4 graphs, run with ORT's CPU kernels.

The artifact is a portable ONNX graph (the same file serves x86-64 and ARM64): hardware-specific
graph rewrites (QDQ fusion into integer kernels, layout changes) happen when the session loads it
with ORT_ENABLE_ALL on the device, not offline.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from edgecompile.backends.base import Artifact, Availability, Backend, BuildInputs
from edgecompile.backends.decoder_prep import prepare_decoder
from edgecompile.backends.fp16_storage import store_weights_fp16
from edgecompile.backends.graph_tidy import finish
from edgecompile.backends.ort_quant import QdqSettings, insert_matmul_nbits, insert_qdq
from edgecompile.models.adapter import ComponentRunner, Feeds, Outputs


def cpu_session(path: Path | str | bytes, threads: int = 0) -> ort.InferenceSession:
    """ORT_ENABLE_ALL, and intra-op threads that sleep instead of spinning between nodes.

    A decode step is hundreds of sub-millisecond kernels; spinning workers fight for the cores with
    everything else on a shared or small CPU (measured on 2 busy cores: decode 2x faster without).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"])


class OrtCpuBackend(Backend):
    name = "ort-cpu"
    description = "ONNX Runtime CPU execution provider (x86-64 and ARM64): Q/DQ INT8 + MatMulNBits INT4"

    def availability(self) -> Availability:
        providers = ort.get_available_providers()
        ok = "CPUExecutionProvider" in providers
        return Availability(ok, ok, f"onnxruntime {ort.__version__} on {platform.machine()}" if ok else "onnxruntime has no CPU provider")

    def settings(self, inputs: BuildInputs) -> QdqSettings:
        q = inputs.recipe.quantization
        # No Q/DQ on MatMul outputs: onnxruntime then fuses DQ+DQ+MatMul into MatMulIntegerToFloat
        # (integer GEMM, float result) instead of QLinearMatMul + a requantize/dequantize round trip;
        # measured on ViT-B/32: fewer ops, slightly faster, cosine 0.99991 instead of 0.99987.
        extra = {"OpTypesToExcludeOutputQuantization": ["MatMul"]}
        return QdqSettings(activation_type=q.activation_type, weight_type=q.weight_type, activation_symmetric=q.activation_symmetric, extra=extra)

    def build(self, inputs: BuildInputs) -> Artifact:
        files: dict[str, str] = {}
        notes: list[str] = []
        for component, source in inputs.exported.items():
            model = onnx.load(str(source))
            entries = inputs.plan.for_component(component)
            model = insert_qdq(model, component, entries, inputs.ranges[component], self.settings(inputs)) if component in inputs.ranges else model
            algorithm = inputs.recipe.quantization.int4_algorithm
            feeds = inputs.calibration_feeds(component) if algorithm == "gptq" and inputs.calibration_feeds is not None and any(e.precision == "int4" for e in entries) else None
            model = insert_matmul_nbits(model, entries, algorithm, feeds)
            model, fusion_note = prepare_decoder(model, component)
            notes += [fusion_note] if fusion_note else []
            model, fp16_weights = store_weights_fp16(model, entries)
            if fp16_weights:
                notes.append(f"{component}: {len(fp16_weights)} FP16-planned weight(s) stored in FP16, computed in float32 (no FP16 arithmetic on this target)")
            name = f"{component}.onnx"
            onnx.save(finish(model), str(inputs.out_dir / name))
            files[component] = name
        return Artifact(self.name, files, runs_here=True, where=f"ONNX Runtime CPU on {platform.machine()} ({platform.node()})", notes=notes)

    def runner(self, artifact_dir: Path, artifact: Artifact) -> ComponentRunner:
        return cpu_runner(artifact_dir, artifact.components)


def cpu_runner(directory: Path, files: dict[str, str]) -> ComponentRunner:
    """Run ONNX components on ONNX Runtime CPU, one lazily opened session each; extra feeds are ignored."""
    sessions: dict[str, ort.InferenceSession] = {}

    def run(component: str, feeds: Feeds) -> Outputs:
        if component not in sessions:
            sessions[component] = cpu_session(directory / files[component])
        session = sessions[component]
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name for i in session.get_inputs()}
        return dict(zip(names, session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in wanted}), strict=True))

    return run
