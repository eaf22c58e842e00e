"""ONNX Runtime sessions on the QNN HTP backend, registered as a plugin EP and checked to be real.

onnxruntime-qnn >= 2.0 is a plugin execution provider: the library is registered with
``onnxruntime.register_execution_provider_library`` and attached to a session with
``SessionOptions.add_provider_for_devices``. Passing ``providers=["QNNExecutionProvider"]`` by name
silently runs everything on the CPU EP, so every session here asserts that QNN is the first
provider and, when strict, that CPU fallback is disabled. On x86-64 Linux the wheel's
``libQnnHtp.so`` emulates the Hexagon NPU's fixed-point arithmetic (accuracy yes, latency no).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgecompile.errors import BackendUnavailable

EP_NAME = "QNNExecutionProvider"
_REGISTERED: list[str] = []


def register_qnn() -> str:
    """Register the onnxruntime-qnn plugin once per process; return its version.

    Raises BackendUnavailable (with the reason) when the package or its HTP library is missing.
    """
    try:
        import onnxruntime_qnn
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime-qnn is not installed ({exc}); pip install 'edgecompile[qnn]'") from None
    version = getattr(onnxruntime_qnn, "__version__", "?")
    if _REGISTERED:
        return version
    library = Path(onnxruntime_qnn.get_library_path())
    htp = Path(onnxruntime_qnn.get_qnn_htp_path())
    if not library.is_file() or not htp.is_file():
        raise BackendUnavailable(f"onnxruntime-qnn {version} has no QNN EP or HTP library here ({library}, {htp})")
    try:
        ort.register_execution_provider_library(EP_NAME, str(library))
    except Exception as exc:  # noqa: BLE001 - any failure to load the plugin disables the backend
        if "already registered" not in str(exc):
            raise BackendUnavailable(f"onnxruntime {ort.__version__} cannot register onnxruntime-qnn {version}: {exc}") from None
    if not qnn_devices():
        raise BackendUnavailable(f"onnxruntime-qnn {version} registered but offers no device to ONNX Runtime {ort.__version__}")
    _REGISTERED.append(version)
    return version


def qnn_devices() -> list[Any]:
    return [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]


def provider_options(soc_model: int, htp_arch: int, offload_io_quantization: bool = True) -> dict[str, str]:
    """QNN EP options for the HTP backend of one SoC."""
    return {"backend_type": "htp", "soc_model": str(soc_model), "htp_arch": str(htp_arch), "offload_graph_io_quantization": "1" if offload_io_quantization else "0"}


def htp_session(model: Path | str | bytes, options: dict[str, str], *, strict: bool, context_out: Path | None = None, record_placement: bool = False) -> ort.InferenceSession:
    """A session whose first provider is QNN on HTP; with ``strict``, CPU fallback is disabled.

    ``context_out``: also write an EPContext model (the pre-compiled HTP context binary) there.
    """
    register_qnn()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if record_placement:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if context_out is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_out))
        so.add_session_config_entry("ep.context_embed_mode", "1")
    so.add_provider_for_devices(qnn_devices(), options)
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), so)
    providers = session.get_providers()
    if not providers or providers[0] != EP_NAME:
        raise RuntimeError(f"QNN session is not on QNN: providers {providers}")
    configured = session.get_session_options().get_session_config_entry("session.disable_cpu_ep_fallback") if strict else "0"
    if strict and configured != "1":
        raise RuntimeError("QNN session was asked to be strict but CPU fallback is not disabled")
    return session


@dataclass
class Placement:
    """Which nodes QNN took and which fell back to the CPU EP.

    QNN EP leaves the graph-input QuantizeLinear and graph-output DequantizeLinear to the CPU by
    design (``offload_graph_io_quantization``); those are listed apart and are not a fallback.
    """

    on_qnn: Counter = field(default_factory=Counter)
    io_quantization: list[str] = field(default_factory=list)
    fallback: list[tuple[str, str]] = field(default_factory=list)  # (node name, op type)

    @property
    def fallback_op_types(self) -> list[str]:
        """Op types that fell back, without the Q/DQ nodes that follow them to the CPU."""
        return sorted({op for _, op in self.fallback} - {"QuantizeLinear", "DequantizeLinear"})

    def to_json(self) -> dict[str, Any]:
        return {"on_qnn": dict(self.on_qnn), "io_quantization_on_cpu": self.io_quantization, "fallback": [{"node": n, "op_type": o} for n, o in self.fallback], "fallback_op_types": self.fallback_op_types}


def placement(model: Path | bytes, options: dict[str, str], graph_inputs: set[str], graph_outputs: set[str], node_io: dict[str, tuple[list[str], list[str]]]) -> Placement:
    """Open a session with fallback allowed and record where every node went."""
    session = htp_session(model, options, strict=False, record_placement=True)
    result = Placement()
    for subgraph in session.get_provider_graph_assignment_info():
        for node in subgraph.get_nodes():
            if subgraph.ep_name == EP_NAME:
                result.on_qnn[node.op_type] += 1
                continue
            inputs, outputs = node_io.get(node.name, ([], []))
            if (node.op_type == "QuantizeLinear" and set(inputs) & graph_inputs) or (node.op_type == "DequantizeLinear" and set(outputs) & graph_outputs):
                result.io_quantization.append(node.name)
            else:
                result.fallback.append((node.name, node.op_type))
    return result
