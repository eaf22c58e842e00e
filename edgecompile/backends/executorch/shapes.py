"""Example inputs and bounded dynamic shapes for ``torch.export`` of one component.

XNNPACK and ExecuTorch's memory planner need an upper bound on every dynamic dimension:

* ``batch`` is exported static at 1 (what an edge device runs); the runner feeds larger batches one
  sample at a time (:mod:`edgecompile.backends.executorch.runner`).
* sequence-like dims (``sequence``, ``total_length``) run 1..L and ``past_length`` 0..L-1, where L is
  the text config's ``max_position_embeddings`` capped at ``DEFAULT_MAX_LENGTH`` (or the recipe's
  ``backend_options.executorch_max_length``). The bounds are recorded in the artifact.
* torch.export specializes sizes 0 and 1 unless shapes are size-oblivious; the decoder needs both
  (prefill with an empty past, decode with one token), so :func:`export_component` exports with
  ``backed_size_oblivious``.
"""

from __future__ import annotations

import re
from typing import Any

from edgecompile.backends.common.export_shapes import signature_shaped
from edgecompile.models.adapter import ComponentSpec

DEFAULT_MAX_LENGTH = 1024
BATCH = "batch"


def max_length(config: Any, option: Any = None) -> int:
    """L: the longest sequence (past + new tokens) a program accepts."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = int(getattr(text, "max_position_embeddings", DEFAULT_MAX_LENGTH) or DEFAULT_MAX_LENGTH)
    cap = int(option) if option else DEFAULT_MAX_LENGTH
    return max(2, min(positions, cap))


def bounds(spec: ComponentSpec, length: int) -> dict[str, tuple[int, int]]:
    """label -> (min, max) for every dynamic label of the component except batch (static 1)."""
    out: dict[str, tuple[int, int]] = {}
    for axes in spec.dynamic_axes.values():
        for label in axes.values():
            if label == BATCH:
                continue
            out[label] = (0, length - 1) if "past" in label else (1, length)
    return out


def batch_axes(spec: ComponentSpec) -> dict[str, int]:
    """input name -> its batch axis (inputs the runner splits into single samples)."""
    return {name: axis for name, axes in spec.dynamic_axes.items() for axis, label in axes.items() if label == BATCH}


def example_inputs(spec: ComponentSpec) -> tuple[Any, ...]:
    """The spec's example inputs with every batch axis cut to 1."""
    axes = batch_axes(spec)
    return tuple(t.narrow(axes[n], 0, 1).contiguous() if n in axes else t for n, t in zip(spec.input_names, spec.example_inputs, strict=True))


def dynamic_shapes(spec: ComponentSpec, label_bounds: dict[str, tuple[int, int]]) -> Any:
    """torch.export ``dynamic_shapes`` shaped like ``forward``'s signature (``*past`` becomes one tuple)."""
    import torch

    dims = {label: torch.export.Dim(label, min=lo, max=hi) for label, (lo, hi) in label_bounds.items()}
    per_input = [{axis: dims[label] for axis, label in spec.dynamic_axes.get(n, {}).items() if label in dims} or None for n in spec.input_names]
    return signature_shaped(spec, per_input)


def export_component(module: Any, spec: ComponentSpec, example: tuple[Any, ...], label_bounds: dict[str, tuple[int, int]]) -> tuple[Any, dict[str, tuple[int, int]]]:
    """``torch.export`` with size-oblivious shapes, so bounds may start at 0 or 1; returns (program, bounds).

    A graph may still guard a dim against 1 (pt2e's quantize/dequantize pair around CLIP's text
    tower does); then that label's minimum is raised to 2 and the export repeated once. The bounds
    returned are the ones the program accepts, and the runner refuses feeds outside them.
    """
    import torch
    import torch.fx.experimental._config as fx_config

    label_bounds = dict(label_bounds)
    for attempt in range(2):
        try:
            with torch.no_grad(), fx_config.patch(backed_size_oblivious=True):
                return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(spec, label_bounds)), label_bounds
        except torch._dynamo.exc.UserError as exc:
            match = re.search(r"Constraints violated \(([^)]*)\)", str(exc))
            labels = [label.strip() for label in match.group(1).split(",")] if match else []
            if attempt or not labels or any(label not in label_bounds or label_bounds[label][0] >= 2 for label in labels):
                raise
            for label in labels:
                label_bounds[label] = (2, label_bounds[label][1])
    raise AssertionError("unreachable")
