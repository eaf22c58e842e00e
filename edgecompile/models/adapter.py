"""The contract between a model family and the pipeline.

A VLM is a named bundle of components. An adapter says how to load a family's checkpoint, which
components it has (each a torch module with example inputs and dynamic axes), how to turn samples
into each component's inputs, and how to score task accuracy from any runner of those components.
Adding a family (SigLIP, Llava, Idefics3, Qwen2-VL) is one new adapter module plus one registry line
(``edgecompile.models.registry``): the adapter also carries what differs between families in the
rest of the pipeline — its module-path role patterns for the precision plan (``role_patterns``)
and, for generative models, its position-id scheme (``GenerationSpec.position_layout``, which the
runtime reads from generation.json without the adapter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch is heavy; the latency probe imports this module without it
    import torch

Feeds = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
ComponentRunner = Callable[[str, Feeds], Outputs]


@dataclass(frozen=True)
class ComponentSpec:
    """One exportable graph of a model."""

    name: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    # Optional: a component whose correctness needs more than "run the example inputs" (a decoder with a
    # KV cache: prefill, then decode steps feeding back its own cache) checks parity itself.
    parity_check: Callable[[Path], dict[str, float]] | None = None


@dataclass
class LoadedModel:
    """A checkpoint loaded through the ordinary ``from_pretrained`` path."""

    path: Path
    model: torch.nn.Module
    processor: Any
    config: Any


class ModelAdapter(Protocol):
    """What every family provides."""

    family: str  # "dual_encoder" | "generative"
    model_types: tuple[str, ...]
    # (module-path regex, role) pairs tried before the generic ones in edgecompile.plan.roles,
    # e.g. (r"\.merger\.", "projector") for a family whose projector has its own name.
    role_patterns: tuple[tuple[str, str], ...]

    def load(self, path: Path, trust_remote_code: bool = False) -> LoadedModel: ...

    def components(self, loaded: LoadedModel) -> list[ComponentSpec]: ...

    def calibration_feeds(self, loaded: LoadedModel, samples: Iterable[Any], component: str) -> Iterator[Feeds]: ...

    def evaluate(self, loaded: LoadedModel, run: ComponentRunner, eval_data: Any) -> dict[str, float]: ...

    def latency_feeds(self, loaded: LoadedModel, component: str) -> Feeds: ...


@runtime_checkable
class TilingAdapter(Protocol):
    """A family that exports a fixed grid of image tiles (LLaVA-NeXT/OneVision anyres, Idefics3 splitting).

    The registry hands it a recipe's ``model_options.tile_grid``; other families refuse that field.
    ``set_tile_grid`` checks the grid against the checkpoint at once (an InputError naming the
    file and the grids it allows), so a refused recipe stops before any stage runs.
    """

    def set_tile_grid(self, grid: tuple[int, int], path: Path) -> None: ...
