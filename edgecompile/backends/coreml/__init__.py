"""CoreML backend (coremltools mlprogram, or ONNX for ORT's CoreML EP); coremltools is imported only when used."""

from edgecompile.backends.base import Backend


def create_backend() -> Backend:
    from edgecompile.backends.coreml.backend import CoreMlBackend

    return CoreMlBackend()
