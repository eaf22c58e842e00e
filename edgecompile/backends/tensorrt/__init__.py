"""TensorRT backend (explicit Q/DQ ONNX, engine where a GPU is present); tensorrt is imported only when used."""

from edgecompile.backends.base import Backend


def create_backend() -> Backend:
    from edgecompile.backends.tensorrt.backend import TensorRtBackend

    return TensorRtBackend()
