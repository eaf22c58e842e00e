"""Sensitivity-conditioned keep-ratio schedule: QUOTA's pruning recipe (seed 003, sec. 3.2).

Layers that low-bit inference disturbs most keep more visual tokens; the rest drop more. The seed's
equations (1)-(5) are partly lost in its text; the reading implemented here is:

1. s_l = ||a_fp - a_q||_2 / (||a_fp||_2 + eps), averaged over the calibration samples (eq. 1).
2. ŝ = clip(s, p10, p90) rescaled by (p90 - p10) to [0, 1] over the candidate layers (eq. 2).
3. d_l = D * softmax(-ŝ / T)_l with D = 1 - final_keep: the less sensitive a layer, the larger its
   drop (eq. 3).
4. ρ_l = max(1 - sum_{m <= l} d_m, floor), non-increasing, ρ_last = max(final_keep, floor) (eq. 4).
5. k_l = ceil(ρ_l * N_v) clipped to [1, N_v] (eq. 5).

Because the recipe refuses floor > final_keep and the cumulative keep never falls below final_keep,
the floor is a guard (it also documents the recipe's intent) rather than an active constraint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompile.pruning.score import resolve_weights, robust_normalize

EPS = 1e-6


def layer_sensitivity(float_acts: np.ndarray, lowbit_acts: np.ndarray, eps: float = EPS) -> float:
    """Relative deviation of a layer's low-bit activation from its float one (eq. 1), one sample."""
    a = np.asarray(float_acts, dtype=np.float64)
    b = np.asarray(lowbit_acts, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"lowbit_acts: expected shape {a.shape} (as float_acts), got {b.shape}")
    return float(np.linalg.norm((a - b).ravel()) / (np.linalg.norm(a.ravel()) + eps))


class SensitivityAccumulator:
    """Mean of :func:`layer_sensitivity` per layer over a calibration stream.

    Only a running sum and a count per layer are kept, so memory does not grow with the number of
    samples: activations can be dropped as soon as ``add`` returns.
    """

    def __init__(self, layers: Iterable[int], eps: float = EPS) -> None:
        self.layers = tuple(int(x) for x in layers)
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers: expected a non-empty list of distinct layer indices, got {self.layers}")
        self.eps = eps
        self._sum = dict.fromkeys(self.layers, 0.0)
        self._count = dict.fromkeys(self.layers, 0)

    def add(self, layer: int, float_acts: np.ndarray, lowbit_acts: np.ndarray) -> float:
        """Record one sample of one layer; returns that sample's sensitivity."""
        if layer not in self._sum:
            raise ValueError(f"layer: {layer} is not one of the accumulator's layers {self.layers}")
        s = layer_sensitivity(float_acts, lowbit_acts, self.eps)
        self._sum[layer] += s
        self._count[layer] += 1
        return s

    def counts(self) -> dict[int, int]:
        """Samples seen per layer."""
        return dict(self._count)

    def values(self) -> np.ndarray:
        """Mean sensitivity per layer, in the order the layers were given."""
        empty = [x for x in self.layers if self._count[x] == 0]
        if empty:
            raise ValueError(f"layers: no samples recorded for {empty}")
        return np.array([self._sum[x] / self._count[x] for x in self.layers])


def normalize_sensitivity(s: Sequence[float] | np.ndarray) -> np.ndarray:
    """Percentile clip and rescale across layers (eq. 2); see :func:`robust_normalize`."""
    v = np.asarray(s, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"sensitivity: expected a non-empty 1-D array of finite values, got {v.tolist()}")
    return robust_normalize(v)


def _check_layers(candidate_layers: Sequence[int]) -> tuple[int, ...]:
    """Candidate layers must be non-empty, strictly increasing integers: the schedule is ordered."""
    layers = tuple(candidate_layers)
    if not layers:
        raise ValueError("candidate_layers: expected at least one layer")
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0 for x in layers):
        raise ValueError(f"candidate_layers: expected non-negative integers, got {list(layers)}")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"candidate_layers: expected strictly increasing (sorted, no duplicates), got {list(layers)}")
    return tuple(int(x) for x in layers)


def _check_ratio(name: str, value: float, allow_zero: bool = False) -> float:
    """A keep ratio or floor in (0, 1] ([0, 1] when ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value <= 1):
        bound = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name}: expected a value in {bound}, got {value}")
    return float(value)


def _cumulative_keep(drops: np.ndarray, final_keep: float, floor: float) -> tuple[float, ...]:
    """ρ_l = max(1 - cumsum(d), floor), non-increasing, with the last pinned to max(final_keep, floor).

    Pinning the last value removes the float drift of the cumulative sum, so a recipe asking for 30%
    gets exactly 0.3 at its last candidate layer.
    """
    rho = np.maximum(1.0 - np.cumsum(drops), floor)
    rho = np.minimum.accumulate(np.clip(rho, floor, 1.0))
    rho[-1] = max(final_keep, floor)
    return tuple(float(x) for x in rho)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax."""
    e = np.exp(x - x.max())
    return e / e.sum()


def allocate_keep_schedule(
    sensitivity: Sequence[float] | np.ndarray,
    candidate_layers: Sequence[int],
    final_keep: float = 0.3,
    floor: float = 0.1,
    temperature: float = 1.0,
    reference_visual_tokens: int | None = None,
    weights: Mapping[str, float] | None = None,
) -> KeepSchedule:
    """QUOTA's schedule (eqs. 2-4): one raw sensitivity per candidate layer, in the same order.

    ``weights`` (the composite-score weights of sec. 3.3) do not affect the allocation; they are
    validated and recorded in ``inputs`` so the recipe carries everything the online selection needs.
    """
    layers = _check_layers(candidate_layers)
    final_keep = _check_ratio("final_keep", final_keep)
    floor = _check_ratio("floor", floor, allow_zero=True)
    if floor > final_keep:
        raise ValueError(f"floor: expected <= final_keep ({final_keep}), got {floor}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    raw = np.asarray(sensitivity, dtype=np.float64)
    if raw.shape != (len(layers),):
        raise ValueError(f"sensitivity: expected {len(layers)} values (one per candidate layer), got shape {raw.shape}")
    drops = (1.0 - final_keep) * _softmax(-normalize_sensitivity(raw) / float(temperature))
    inputs: dict[str, Any] = {
        "method": "quota",
        "final_keep": final_keep,
        "floor": floor,
        "temperature": float(temperature),
    }
    if weights is not None:
        inputs["weights"] = resolve_weights(weights)
    return KeepSchedule(layers, _cumulative_keep(drops, final_keep, floor), reference_visual_tokens, tuple(float(x) for x in raw), inputs)


def uniform_keep_schedule(candidate_layers: Sequence[int], final_keep: float, reference_visual_tokens: int | None = None) -> KeepSchedule:
    """Equal drop per candidate layer: the stage-wise baselines' schedule (no sensitivity)."""
    layers = _check_layers(candidate_layers)
    final_keep = _check_ratio("final_keep", final_keep)
    drops = np.full(len(layers), (1.0 - final_keep) / len(layers))
    inputs = {"method": "uniform", "final_keep": final_keep}
    return KeepSchedule(layers, _cumulative_keep(drops, final_keep, 0.0), reference_visual_tokens, (), inputs)


_JSON_FIELDS = ("layers", "keep_ratios", "reference_visual_tokens", "sensitivity", "inputs")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class KeepSchedule:
    """Cumulative keep ratio per candidate layer: the deployable pruning recipe.

    ``keep_ratios[i]`` is the fraction of the reference visual tokens still alive after
    ``layers[i]``; ``sensitivity`` holds the raw (un-normalized) values it came from (empty for the
    uniform baseline); ``inputs`` records the allocation's knobs so the recipe explains itself.
    """

    layers: tuple[int, ...]
    keep_ratios: tuple[float, ...]
    reference_visual_tokens: int | None = None
    sensitivity: tuple[float, ...] = ()
    inputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_layers(self.layers)
        if len(self.keep_ratios) != len(self.layers):
            raise ValueError(f"keep_ratios: expected {len(self.layers)} values (one per layer), got {len(self.keep_ratios)}")
        for r in self.keep_ratios:
            _check_ratio("keep_ratios", r)
        if any(b > a for a, b in zip(self.keep_ratios, self.keep_ratios[1:])):
            raise ValueError(f"keep_ratios: expected non-increasing, got {list(self.keep_ratios)}")
        if self.sensitivity and len(self.sensitivity) != len(self.layers):
            raise ValueError(f"sensitivity: expected 0 or {len(self.layers)} values, got {len(self.sensitivity)}")
        ref = self.reference_visual_tokens
        if ref is not None and (not _is_int(ref) or ref < 1):
            raise ValueError(f"reference_visual_tokens: expected a positive integer or null, got {ref!r}")

    def budgets(self, n_visual: int | None = None) -> tuple[int, ...]:
        """k_l = ceil(ρ_l · N_v) clipped to [1, N_v] (eq. 5); N_v defaults to the reference length.

        The product is rounded to 9 decimals before ``ceil`` so that 0.3 * 10 = 3.0000000000000004
        gives 3, not 4.
        """
        n = self.reference_visual_tokens if n_visual is None else n_visual
        if not (_is_int(n) or isinstance(n, np.integer)) or n < 1:
            raise ValueError(f"n_visual: expected a positive integer, got {n!r}")
        return tuple(min(max(math.ceil(round(r * n, 9)), 1), int(n)) for r in self.keep_ratios)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {
            "layers": list(self.layers),
            "keep_ratios": list(self.keep_ratios),
            "reference_visual_tokens": self.reference_visual_tokens,
            "sensitivity": list(self.sensitivity),
            "inputs": dict(self.inputs),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The recipe as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path | Mapping[str, Any]) -> KeepSchedule:
        """Read a recipe from a file path (str or Path) or an already-parsed dict.

        Unknown keys and wrong types are refused with the key's name, so a hand-edited recipe fails
        at load time rather than as a wrong budget on the device.
        """
        data = source if isinstance(source, Mapping) else json.loads(Path(source).read_text())
        return cls(**_parse_fields(data))


def _parse_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """Type-check a recipe dict key by key (value checks are the dataclass's)."""
    unknown = sorted(set(data) - set(_JSON_FIELDS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key (expected {', '.join(_JSON_FIELDS)})")
    for key in ("layers", "keep_ratios"):
        if key not in data:
            raise ValueError(f"{key}: missing")
    checks = {"layers": _is_int, "keep_ratios": _is_num, "sensitivity": _is_num}
    out: dict[str, Any] = {}
    for key, ok in checks.items():
        value = data.get(key, [])
        if not isinstance(value, list) or not all(ok(x) for x in value):
            raise ValueError(f"{key}: expected a list of {'integers' if ok is _is_int else 'numbers'}, got {value!r}")
        out[key] = tuple(value)
    ref = data.get("reference_visual_tokens")
    if ref is not None and not _is_int(ref):
        raise ValueError(f"reference_visual_tokens: expected an integer or null, got {ref!r}")
    out["reference_visual_tokens"] = ref
    out["inputs"] = _parse_inputs(data.get("inputs", {}))
    return out


_INPUT_CHECKS = {"method": (lambda x: x in ("quota", "uniform"), "'quota' or 'uniform'"),
                 "final_keep": (_is_num, "a number"),
                 "floor": (_is_num, "a number"),
                 "temperature": (_is_num, "a number"),
                 "weights": (lambda x: isinstance(x, dict) and all(isinstance(k, str) and _is_num(v) for k, v in x.items()),
                             "an object of numbers")}


def _parse_inputs(inputs: Any) -> dict[str, Any]:
    """The allocation's recorded knobs: known keys only, each of its type."""
    if not isinstance(inputs, dict):
        raise ValueError(f"inputs: expected an object, got {inputs!r}")
    for key, value in inputs.items():
        if key not in _INPUT_CHECKS:
            raise ValueError(f"inputs.{key}: unknown key (expected {', '.join(_INPUT_CHECKS)})")
        ok, what = _INPUT_CHECKS[key]
        if not ok(value):
            raise ValueError(f"inputs.{key}: expected {what}, got {value!r}")
    return dict(inputs)
