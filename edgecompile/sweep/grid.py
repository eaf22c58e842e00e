"""Sweep grids: a base recipe x axes of dotted recipe fields, plus optional resource hints.

The grid YAML maps dotted recipe fields to lists of values, e.g.::

    axes:
      precision_preset: [fp16, w8a8, w4a8]
      calibration.method: [minmax, percentile]
      calibration.set: [balanced, dark]
      target: [x86-cpu, arm64-cpu]           # grids can span targets ...
      model: [shapes-clip, /models/other]    # ... and models (a name or a directory)
    resources:                               # optional, per phase; used by the Ray engine
      export: {num_cpus: 2, memory_mb: 4096}
      validate: {num_cpus: 1}

Phases: ``export`` (export..calibrate of the first point of each distinct model), ``prepare``
(annotate..calibrate of every point), ``build`` and ``validate``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgecompile.config.strict_yaml import parse_file
from edgecompile.errors import InputError

PHASES = ("export", "prepare", "build", "validate")


@dataclass(frozen=True)
class Resources:
    """What one task of a phase asks the scheduler for (Ray's num_cpus and memory)."""

    num_cpus: float = 1.0
    memory_mb: int | None = None

    def ray_options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.memory_mb is not None:
            out["memory"] = int(self.memory_mb) * 2**20
        return out


@dataclass(frozen=True)
class Grid:
    axes: dict[str, list[Any]]
    resources: dict[str, Resources] = field(default_factory=dict)

    def resources_for(self, phase: str) -> Resources:
        return self.resources.get(phase, Resources())


def _resources(path: Path, data: Any) -> dict[str, Resources]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: resources: expected a mapping of phase ({', '.join(PHASES)}) to {{num_cpus, memory_mb}}")
    out = {}
    for phase, spec in data.items():
        if phase not in PHASES:
            raise InputError(f"{path}: resources.{phase}: unknown phase; expected one of {', '.join(PHASES)}")
        if not isinstance(spec, dict) or set(spec) - {"num_cpus", "memory_mb"}:
            raise InputError(f"{path}: resources.{phase}: expected a mapping with num_cpus and/or memory_mb, got {spec!r}")
        cpus, mem = spec.get("num_cpus", 1), spec.get("memory_mb")
        if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or cpus <= 0:
            raise InputError(f"{path}: resources.{phase}.num_cpus: expected a positive number, got {cpus!r}")
        if mem is not None and (isinstance(mem, bool) or not isinstance(mem, int) or mem <= 0):
            raise InputError(f"{path}: resources.{phase}.memory_mb: expected a positive integer, got {mem!r}")
        out[phase] = Resources(float(cpus), mem)
    return out


def load_grid_spec(path: Path) -> Grid:
    """The grid file, strictly read: unknown keys, empty axes and repeated axis values are errors."""
    data, _ = parse_file(path, InputError, what="sweep grids")
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise InputError(f"{path}: expected a mapping with 'axes: {{<dotted recipe field>: [values, ...]}}'")
    unknown = set(data) - {"axes", "resources"}
    if unknown:
        raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected axes and (optional) resources")
    for key, values in data["axes"].items():
        if not isinstance(values, list) or not values:
            raise InputError(f"{path}: axes.{key}: expected a non-empty list of values")
        if len({yaml.safe_dump(v) for v in values}) != len(values):
            raise InputError(f"{path}: axes.{key}: a value is listed twice (each value names one grid point)")
    return Grid({str(k): list(v) for k, v in data["axes"].items()}, _resources(path, data.get("resources")))


def load_grid(path: Path) -> dict[str, list[Any]]:
    """The grid's axes (see :func:`load_grid_spec` for the resource hints too)."""
    return load_grid_spec(path).axes


def _slug(value: Any) -> str:
    text = Path(value).name if isinstance(value, str) and "/" in value else value  # a model directory: its name
    return "".join(ch if ch.isalnum() else "-" for ch in str(text).lower()).strip("-")


def points(base: dict[str, Any], axes: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every grid point as (name, derived recipe document)."""
    out = []
    for combo in itertools.product(*axes.values()):
        doc = yaml.safe_load(yaml.safe_dump(base))
        for key, value in zip(axes, combo, strict=True):
            node = doc
            *parents, leaf = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        calibration = doc.get("calibration", {})
        if calibration.get("method", "minmax") != "percentile":
            calibration.pop("percentile", None)  # the base's percentile means nothing for minmax/entropy points
        name = "-".join([base["name"], *(_slug(v) for v in combo)])
        doc["name"] = name
        out.append((name, doc))
    names = [n for n, _ in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise InputError(f"grid points {', '.join(clash)}: two axis values make the same point name; rename one value")
    return out


def check_points(path: Path, base: dict[str, Any], axes: dict[str, list[Any]]) -> None:
    """Every grid point must be a valid recipe, strictly (no bool->int); an error names the grid file,
    the line of the axis that produced the bad value, the point and the recipe field. Runs before
    the sweep writes anything."""
    from pydantic import ValidationError

    from edgecompile.config.loader import _field_name, _line_of, _message, _useful_loc, validate_strict
    from edgecompile.config.recipe import Recipe

    _, node = parse_file(path, InputError, what="sweep grids")
    axes_node = next((v for k, v in node.value if k.value == "axes"), None) if isinstance(node, yaml.MappingNode) else None
    for name, doc in points(base, axes):
        try:
            validate_strict(Recipe, doc)
        except ValidationError as exc:
            lines = []
            for error in exc.errors():
                loc = _useful_loc(tuple(error["loc"]))
                field = _field_name(loc)
                axis = next((key for key in axes if field == key or field.startswith(key + ".") or key.startswith(field + ".")), None)
                line = _line_of(axes_node, (axis,)) if axis is not None else _line_of(node, ("axes",))
                where = f"axes.{axis}" if axis is not None else "the base recipe"
                lines.append(f"{path}:{line}: {where}: point '{name}': {field}: {_message(error)}")
            raise InputError("\n".join(lines)) from None
