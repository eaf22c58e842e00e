"""The lines that repeat validate's comparison from the saved reference, run from the build directory.

Paths are relative to the build directory (``cd BUILD`` first, on this machine or on the device) and
the runner is the backend's: ``--onnxrt`` for ONNX Runtime CPU graphs, ``--trt`` for the TensorRT
Q/DQ graph (TensorRT builds the engine from it), and for QNN HTP context models
``python -m edgecompile.device compare``, which feeds Polygraphy's OnnxrtRunner a session on the
QNN plugin EP (``polygraphy run --providers`` matches only built-in EPs, and a context model cannot
run anywhere else). CoreML and ExecuTorch programs have no Polygraphy runner: no line.
"""

from __future__ import annotations

import shlex
from typing import Any

REFERENCE = "validate/reference"


def _tolerances(outputs: dict[str, dict[str, Any]]) -> list[str]:
    parts = ["--atol", *[f"{n}:{r['atol']}" for n, r in outputs.items()]]
    parts += ["--rtol", *[f"{n}:{r['rtol']}" for n, r in outputs.items()]]
    parts += ["--cosine-similarity-threshold", *[f"{n}:{r['min_cosine']}" for n, r in outputs.items()]]
    return parts


def repeat_commands(backend: str, artifacts: dict[str, str], comparison: dict[str, Any]) -> dict[str, str]:
    """component -> command line; ``artifacts`` are paths relative to the build directory, ``comparison`` validate's comparison.json."""
    lines: dict[str, str] = {}
    for component, outputs in comparison.get("components", {}).items():
        model = artifacts.get(component, "")
        if not outputs or not model.endswith(".onnx"):
            continue
        error_stat = next(iter(outputs.values())).get("error_stat", "median")
        io = ["--load-inputs", f"{REFERENCE}/{component}.inputs.json", "--load-outputs", f"{REFERENCE}/{component}.outputs.json"]
        if backend == "qnn":
            parts = ["python", "-m", "edgecompile.device", "compare", "--build", ".", "--component", component]
        else:
            runner = ["--trt"] if backend == "tensorrt" else ["--onnxrt", "--providers", "cpu"]
            parts = ["polygraphy", "run", model, *runner, *io, "--compare-func", "simple", "cosine_similarity", "--check-error-stat", error_stat, *_tolerances(outputs)]
        lines[component] = shlex.join(parts)
    return lines
