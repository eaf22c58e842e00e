"""ONNX Runtime CPU backend: Q/DQ INT8, MatMulNBits INT4 and the decoder fusion for fast CPU decode."""

from edgecompile.backends.base import Backend


def create_backend() -> Backend:
    from edgecompile.backends.ort_cpu.backend import OrtCpuBackend

    return OrtCpuBackend()
