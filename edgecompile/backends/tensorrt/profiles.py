"""TensorRT optimisation profiles derived from the model and recipe, so no hand-written profile is needed.

TensorRT builds an engine for one [min, opt, max] shape per dynamic dim, and checks the graph's
shape constraints at each of the three points. A KV-cache decoder ties its dims together
(``total_length == past_length + sequence``: the mask covers the past and the new tokens), so a
profile whose max is "every dim at the context length" is refused by the builder. The profile
here is consistent at min, opt and max:

* L, the context length: the text config's ``max_position_embeddings``, capped by
  ``backend_options.context_length`` (default ``DEFAULT_CONTEXT``).
* C, the prefill chunk: the most new tokens one call takes (``backend_options.prefill_chunk``,
  default L/2, at most ``DEFAULT_CHUNK``); the generation runtime prefills the prompt in one call,
  so C bounds the prompt length.
* min: one token, empty past (sequence 1, past 0, total 1).
* opt: a decode step after a prefill chunk (sequence 1, past C-1, total C): the shape called once
  per generated token, so the one worth tuning tactics for.
* max: a full chunk after the longest past that leaves room for it (sequence C, past L-C, total L).
* batch: 1 for a decoder with a cache (what the generation runtime feeds); the recipe's
  ``batch`` entry (or ``DEFAULT_BATCH``) elsewhere.

A hand-written ``backend_options.trt_profile`` entry still wins for its dim. Components without a
past input (vision towers, text towers, ``embed_tokens``) keep the rule they had: batch from the
table, sequence-like dims 1..L with opt min(16, L).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import onnx

from edgecompile.errors import InputError

DEFAULT_BATCH = (1, 1, 8)
DEFAULT_CONTEXT = 4096
DEFAULT_CHUNK = 512

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class DerivedProfile:
    """Per input (min, opt, max) shapes, and where each dynamic dim's triple came from."""

    shapes: dict[str, tuple[list[int], list[int], list[int]]]
    dims: dict[str, Triple] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dims": {k: list(v) for k, v in self.dims.items()}, "sources": dict(self.sources), "shapes": {k: [lo, hi] for k, (lo, _, hi) in self.shapes.items()}}


def outside_profile(profile: dict[str, Any], feeds: dict[str, Any]) -> list[str]:
    """Feeds whose shape an engine built with ``profile`` (``DerivedProfile.to_json``) would refuse."""
    problems = []
    for name, (lo, hi) in profile.get("shapes", {}).items():
        if name in feeds:
            shape = list(feeds[name].shape)
            if len(shape) != len(lo) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi, strict=False)):
                problems.append(f"{name} {shape} outside [{lo}, {hi}]")
    return problems


def _dim_labels(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(input name, label) of every symbolic dim of the graph's inputs, in order."""
    return [(v.name, d.dim_param) for v in model.graph.input for d in v.type.tensor_type.shape.dim if not d.HasField("dim_value")]


def context_lengths(options: dict[str, Any], positions: int | None) -> tuple[int, int, str]:
    """(L, C, why): the context length and prefill chunk from the model's positions and the options."""
    cap = options.get("context_length")
    if positions is None and cap is None:
        return 0, 0, ""
    length = min(x for x in (positions, cap or DEFAULT_CONTEXT) if x)
    why = f"context {length} = min(max_position_embeddings {positions}, {'backend_options.context_length' if cap else 'default cap'} {cap or DEFAULT_CONTEXT})"
    chunk = options.get("prefill_chunk") or min(DEFAULT_CHUNK, max(1, length // 2))
    if length < 2:
        raise InputError(f"backend_options.context_length: {length} leaves no room for a decode step; expected at least 2")
    if not 1 <= chunk < length:
        raise InputError(f"backend_options.prefill_chunk: {chunk} must be between 1 and the context length - 1 ({length - 1})")
    return length, chunk, why + f", prefill chunk {chunk}"


def derive_profile(model: onnx.ModelProto, options: dict[str, Any], positions: int | None) -> DerivedProfile:
    """The (min, opt, max) shape of every graph input: hand-written dims first, then derived, else refused (exit 3)."""
    written = {k: tuple(v) for k, v in (options.get("trt_profile") or {}).items()}
    labels = _dim_labels(model)
    decoder = any("past" in label for _, label in labels)
    length, chunk, why = context_lengths(options, positions)
    dims: dict[str, Triple] = {}
    sources: dict[str, str] = {}
    for name, label in labels:
        if label in dims:
            continue
        if label in written:
            dims[label], sources[label] = written[label], "backend_options.trt_profile"
        elif label == "batch":
            dims[label], sources[label] = ((1, 1, 1), "decoder with a KV cache: batch 1") if decoder else (DEFAULT_BATCH, "default")
        elif length and decoder:
            if "past" in label:
                dims[label] = (0, chunk - 1, length - chunk)
            elif "total" in label:
                dims[label] = (1, chunk, length)
            else:  # the new tokens of this call
                dims[label] = (1, 1, chunk)
            sources[label] = f"derived ({why})"
        elif length and ("seq" in label or "length" in label):
            dims[label], sources[label] = (1, min(16, length), length), f"derived ({why})"
        else:
            raise InputError(f"recipe backend_options.trt_profile: no [min, opt, max] for dynamic dim '{label}' of input '{name}' (not derivable from the model); add it to backend_options.trt_profile")
    for label, (lo, opt, hi) in dims.items():
        if not lo <= opt <= hi:
            raise InputError(f"backend_options.trt_profile.{label}: [{lo}, {opt}, {hi}] is not ordered min <= opt <= max")
    shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for value in model.graph.input:
        lo, opt, hi = [], [], []
        for d in value.type.tensor_type.shape.dim:
            triple = (d.dim_value,) * 3 if d.HasField("dim_value") else dims[d.dim_param]
            lo.append(triple[0]), opt.append(triple[1]), hi.append(triple[2])
        shapes[value.name] = (lo, opt, hi)
    return DerivedProfile(shapes, dims, sources)
