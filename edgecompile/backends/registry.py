"""Known backends, by name: each is a package under ``edgecompile.backends`` with ``create_backend()``.

Adding a backend is one package plus one line in ``_PACKAGES``. Importing a backend package never
imports its optional SDK (coremltools, tensorrt, onnxruntime-qnn, executorch): the backend's
``availability()`` says when the SDK is missing. So an ImportError while importing the package is
a bug in edgecompile and is raised as one, never reported as "backend unavailable".
"""

from __future__ import annotations

import importlib

from edgecompile.backends.base import Backend
from edgecompile.errors import InputError

_PACKAGES: dict[str, str] = {
    "ort-cpu": "edgecompile.backends.ort_cpu",
    "qnn": "edgecompile.backends.qnn",
    "coreml": "edgecompile.backends.coreml",
    "tensorrt": "edgecompile.backends.tensorrt",
    "executorch": "edgecompile.backends.executorch",
}


def backend_names() -> list[str]:
    return sorted(_PACKAGES)


def get_backend(name: str) -> Backend:
    if name not in _PACKAGES:
        raise InputError(f"unknown backend '{name}'; expected one of {', '.join(backend_names())}")
    return importlib.import_module(_PACKAGES[name]).create_backend()
