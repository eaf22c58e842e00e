"""Grid points that would build the same artifact are built once and reported once.

Three checks, cheapest first; the first point in grid order is the one kept:

1. ``recipe``: the derived recipes are identical once the point name is set aside (an axis value
   the point's settings normalise away, e.g. a percentile on a minmax point);
2. ``build inputs``: after export..calibrate ran (or were reused), the build stage's input
   fingerprint equals that of an earlier point: the build would be the same, so it is not run.
   Typical: an upstream stage whose inputs differ produced byte-identical output (a calibration
   set for a plan whose calibration records nothing that differs);
3. ``artifact``: the build ran, and its output is byte-identical to an earlier point's (the
   build's inputs differed only in data it does not read, e.g. activation ranges of a plan with
   dynamic activations): the artifact is not validated or reported twice.

Every merge is recorded with the fields that differ between the two points and the stage whose
differing inputs made no difference to its output, read from both points' manifests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgecompile.stages.context import read_manifest


def _flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: doc}


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    """Dotted recipe fields whose values differ between two derived recipes (the name aside)."""
    fa, fb = _flat({k: v for k, v in a.items() if k != "name"}), _flat({k: v for k, v in b.items() if k != "name"})
    return {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def recipe_key(doc: dict[str, Any]) -> str:
    return yaml.safe_dump({k: v for k, v in doc.items() if k != "name"}, sort_keys=True)


def neutral_stage(kept: Path, merged: Path) -> str | None:
    """The first stage whose inputs differ between the two points while its outputs are identical."""
    a, b = read_manifest(kept).stages, read_manifest(merged).stages
    for stage in ("export", "annotate", "transform", "calibrate", "build"):
        ra, rb = a.get(stage), b.get(stage)
        if ra is None or rb is None:
            return None
        if ra.fingerprint != rb.fingerprint and ra.outputs == rb.outputs:
            return stage
    return None


def explain(level: str, kept_doc: dict[str, Any], doc: dict[str, Any], kept_dir: Path | None, point_dir: Path | None) -> str:
    fields = differing_fields(kept_doc, doc)
    shown = ", ".join(f"{k}: {v[1]!r} vs {v[0]!r}" for k, v in fields.items()) or "no field"
    if level == "recipe":
        return f"the derived recipes are identical ({shown} differs)"
    stage = neutral_stage(kept_dir, point_dir) if kept_dir is not None and point_dir is not None else None
    if level == "build inputs":
        where = f"stage '{stage}' had different inputs but wrote byte-identical output, so " if stage else ""
        return f"{shown}: {where}the build stage's inputs coincide; the artifact was built once"
    where = f" (stage '{stage}' had different inputs but identical output)" if stage else ""
    return f"{shown}: the built artifact is byte-identical{where}; validated and reported once"
