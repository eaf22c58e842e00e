"""Native runners on the device, one per backend, each importing its runtime only when opened.

These are the device-side twins of the backends' runners. They cannot be the backends' own: a
backend package imports onnx, pydantic and the build tooling, none of which a device needs. The
QNN session here follows edgecompile/backends/qnn/session.py (register the plugin EP, attach it by
device, refuse a session that is not on QNN, no CPU fallback unless the build allowed it).
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
Runner = Callable[[str, Feeds], Feeds]


class RuntimeUnavailable(Exception):
    """The device runtime this artifact needs is not installed or cannot run here (exit 4)."""


def runtime_kind(backend: str) -> str:
    """What the runtime opened here is for ``backend``: "native" or "emulator" (edgecompile.validation.execution)."""
    if backend == "qnn" and platform.machine().lower() in ("x86_64", "amd64"):
        return "emulator"  # the x86-64 wheel's libQnnHtp.so simulates the NPU
    return "native"


def open_runner(backend: str, files: dict[str, Path], extra: dict[str, Any]) -> Runner:
    """A runner of ``files`` (component -> artifact path) on ``backend``'s own runtime."""
    openers = {"ort-cpu": _ort_cpu, "qnn": _qnn, "coreml": _coreml, "tensorrt": _tensorrt}
    if backend not in openers:
        raise RuntimeUnavailable(f"backend '{backend}': no device runner in edgecompile.device (the ExecuTorch Python runtime takes torch tensors; run the .pte with ExecuTorch's executor_runner)")
    return openers[backend](files, extra)


def _feeds_for(names: set[str], feeds: Feeds) -> Feeds:
    return {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in names}


def _ort_cpu(files: dict[str, Path], extra: dict[str, Any]) -> Runner:
    try:
        from edgecompile.runtime.onnx_cpu import cpu_runner
    except ImportError as exc:
        raise RuntimeUnavailable(f"onnxruntime is not installed ({exc}); pip install onnxruntime") from None
    directory = Path("/")
    return cpu_runner(directory, {c: str(p.resolve()) for c, p in files.items()})


def _qnn_session(path: Path, options: dict[str, str], strict: bool) -> Any:
    try:
        import onnxruntime as ort
        import onnxruntime_qnn
    except ImportError as exc:
        raise RuntimeUnavailable(f"onnxruntime-qnn is not installed ({exc}); pip install onnxruntime-qnn") from None
    name = "QNNExecutionProvider"
    if not any(d.ep_name == name for d in ort.get_ep_devices()):
        try:
            ort.register_execution_provider_library(name, str(onnxruntime_qnn.get_library_path()))
        except Exception as exc:  # noqa: BLE001 - any failure to load the plugin means no QNN here
            if "already registered" not in str(exc):
                raise RuntimeUnavailable(f"onnxruntime {ort.__version__} cannot register onnxruntime-qnn: {exc}") from None
    devices = [d for d in ort.get_ep_devices() if d.ep_name == name]
    if not devices:
        raise RuntimeUnavailable("onnxruntime-qnn registered but offers no QNN device")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_provider_for_devices(devices, options)
    session = ort.InferenceSession(str(path), so)
    if session.get_providers()[:1] != [name]:
        raise RuntimeUnavailable(f"{path.name}: the session is not on QNN (providers {session.get_providers()})")
    return session


def _pad(value: np.ndarray, shape: list[Any], name: str) -> np.ndarray:
    target = [int(d) for d in shape]
    if list(value.shape) == target:
        return np.ascontiguousarray(value)
    if value.ndim != len(target) or any(v > t for v, t in zip(value.shape, target, strict=True)):
        raise ValueError(f"input '{name}' of shape {list(value.shape)} does not fit the HTP graph's static shape {target}")
    return np.pad(value, [(0, t - v) for v, t in zip(value.shape, target, strict=True)])


def _qnn(files: dict[str, Path], extra: dict[str, Any]) -> Runner:
    options = {"backend_type": "htp", "soc_model": str(extra.get("soc_model", 57)), "htp_arch": str(extra.get("htp_arch", 75)), "offload_graph_io_quantization": "1"}
    allowed = set(extra.get("fallback_allowed", []))
    sessions: dict[str, Any] = {}

    def run(component: str, feeds: Feeds) -> Feeds:
        if component not in sessions:
            sessions[component] = _qnn_session(files[component], options, strict=component not in allowed)
        session = sessions[component]
        shapes = {i.name: list(i.shape) for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        batch = next(iter(feeds.values())).shape[0]  # static batch-1 graphs: one row at a time
        rows = [session.run(names, {k: _pad(v[b : b + 1], shapes[k], k) for k, v in feeds.items() if k in shapes}) for b in range(batch)]
        return {n: np.concatenate([r[i] for r in rows]) for i, n in enumerate(names)}

    return run


def _coreml(files: dict[str, Path], extra: dict[str, Any]) -> Runner:
    if platform.system() != "Darwin":
        raise RuntimeUnavailable(f"CoreML models run only on macOS/iOS (this is {platform.system()})")
    try:
        import coremltools as ct
    except ImportError as exc:
        raise RuntimeUnavailable(f"coremltools is not installed ({exc}); pip install coremltools") from None
    models: dict[str, Any] = {}

    def run(component: str, feeds: Feeds) -> Feeds:
        if component not in models:
            models[component] = ct.models.MLModel(str(files[component]))
        model = models[component]
        names = {i.name for i in model.get_spec().description.input}
        batch = next(iter(feeds.values())).shape[0]
        rows = [model.predict({k: v[b : b + 1] for k, v in _feeds_for(names, feeds).items()}) for b in range(batch)]
        return {n: np.concatenate([np.asarray(r[n]) for r in rows]) for n in rows[0]}

    return run


def _tensorrt(files: dict[str, Path], extra: dict[str, Any]) -> Runner:
    """TensorRT engines (built on the device by the bundle's build_engines.sh) through Polygraphy's TrtRunner."""
    try:
        import tensorrt  # noqa: F401 - the engine's runtime
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError as exc:
        raise RuntimeUnavailable(f"TensorRT is not usable here ({exc}); run on the device with tensorrt and polygraphy installed") from None
    runners: dict[str, Any] = {}

    def run(component: str, feeds: Feeds) -> Feeds:
        if component not in runners:
            engine = files[component].with_suffix(".engine")
            if not engine.is_file():
                raise RuntimeUnavailable(f"{engine}: no engine; run build_engines.sh on the device first")
            runners[component] = TrtRunner(EngineFromBytes(engine.read_bytes()))
            runners[component].activate()
        return {k: np.asarray(v) for k, v in runners[component].infer(feeds).items()}

    return run
