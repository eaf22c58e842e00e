"""ONNX graphs run on ONNX Runtime's CPU provider: the float reference, stand-ins and ORT CPU artifacts.

A runtime helper, not a backend: validation runs every reference through it, and backends whose
artifact is an ONNX graph (ORT CPU, the TensorRT stand-in) use it as their runner.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

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
