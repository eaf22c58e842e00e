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


class CpuRunner:
    """Run ONNX components on ONNX Runtime CPU, one lazily opened session each; extra feeds are ignored.

    A ``ComponentRunner`` (called with a component and its feeds) for every caller, plus
    :meth:`fast_decoder`, which ``runtime.generate`` uses when the decoder is fused into
    GroupQueryAttention: a shared in-place KV buffer and I/O binding instead of numpy round trips.
    An empty cache fed in another dtype than the graph's (float32 zeros to an INT8 cache) is given
    the graph's dtype: an empty cache has no values to convert.
    """

    def __init__(self, directory: Path, files: dict[str, str], threads: int = 0) -> None:
        self.directory, self.files, self.threads = directory, files, threads
        self.sessions: dict[str, ort.InferenceSession] = {}
        self._shares: bool | None = None

    def session(self, component: str) -> ort.InferenceSession:
        if component not in self.sessions:
            self.sessions[component] = cpu_session(self.directory / self.files[component], self.threads)
        return self.sessions[component]

    def __call__(self, component: str, feeds: Feeds) -> Outputs:
        session = self.session(component)
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name: i.type for i in (*session.get_inputs(), *session.get_overridable_initializers())}
        ready = {k: _as_input(v, wanted[k]) for k, v in feeds.items() if k in wanted}
        return dict(zip(names, session.run(names, ready), strict=True))

    def fast_decoder(self, layers: int, max_length: int):  # noqa: ANN201 - OrtDecoder | None
        """An :class:`~edgecompile.runtime.ort_decode.OrtDecoder` over the decoder and embed_tokens, or None where the graph cannot share its cache buffer."""
        from edgecompile.runtime.ort_decode import OrtDecoder, shares_buffer

        if self._shares is None:
            self._shares = "decoder" in self.files and shares_buffer(self.directory / self.files["decoder"])
        if not self._shares:
            return None
        decoder = self.session("decoder")
        dims = {i.name: i.shape for i in decoder.get_inputs()}
        if not all(isinstance(d, int) for d in (*dims["past_key_0"][1::2], dims["inputs_embeds"][2])):
            return None  # symbolic heads / head size / hidden: nothing to preallocate from
        embed = self.session("embed_tokens") if "embed_tokens" in self.files else None
        return OrtDecoder(decoder, layers, max_length, embed)


_EMPTY_CAST = {"tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(float16)": np.float16, "tensor(float)": np.float32}


def _as_input(value: np.ndarray, kind: str) -> np.ndarray:
    if value.size == 0 and kind in _EMPTY_CAST and value.dtype != _EMPTY_CAST[kind]:
        return np.zeros(value.shape, _EMPTY_CAST[kind])
    if kind == "tensor(int8)" and value.dtype.kind == "f":
        # A float cache handed to an INT8-cache graph: only the latency feeds do this (they are built
        # from the model config, before any artifact exists, and their values do not change a step's
        # cost); generation feeds the graph's own INT8 presents back. Rounded on its own scale.
        scale = float(np.abs(value).max()) / 127 or 1.0
        return np.clip(np.round(value / scale), -127, 127).astype(np.int8)
    return np.ascontiguousarray(value)


def cpu_runner(directory: Path, files: dict[str, str]) -> ComponentRunner:
    """Run ONNX components on ONNX Runtime CPU (see :class:`CpuRunner`)."""
    return CpuRunner(directory, files)
