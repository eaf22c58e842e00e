"""ONNX Runtime QNN EP backend (Snapdragon Hexagon HTP); the SDK (onnxruntime-qnn) is imported only when used."""

from edgecompile.backends.base import Backend


def create_backend() -> Backend:
    from edgecompile.backends.qnn.backend import QnnBackend

    return QnnBackend()
