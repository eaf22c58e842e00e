"""Known backends, by name. Adding a backend is one module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from edgecompile.backends.base import Backend
from edgecompile.errors import InputError


def _ort_cpu() -> Backend:
    from edgecompile.backends.ort_cpu import OrtCpuBackend

    return OrtCpuBackend()


_FACTORIES: dict[str, Callable[[], Backend]] = {"ort-cpu": _ort_cpu}


def register(name: str, factory: Callable[[], Backend]) -> None:
    _FACTORIES[name] = factory


def _load_optional() -> None:
    for module in ("qnn", "coreml", "tensorrt"):
        try:
            __import__(f"edgecompile.backends.{module}")
        except ImportError:
            continue


def backend_names() -> list[str]:
    _load_optional()
    return sorted(_FACTORIES)


def get_backend(name: str) -> Backend:
    _load_optional()
    if name not in _FACTORIES:
        raise InputError(f"unknown backend '{name}'; expected one of {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name]()
