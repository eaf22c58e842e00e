"""Validate's deeper checks, kept out of validate.py: the saved Polygraphy reference, the per-output
comparison, per-layer attribution, and the comparison gates.

Files written into ``validate/``: ``reference/`` (Polygraphy inputs + RunResults of the FP32 run),
``comparison/`` (AccuracyResults per component), ``comparison.json`` (summary + the ``polygraphy
run`` command lines that repeat it) and ``layers.json`` (ranked per-layer error).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgecompile.backends.base import Artifact
from edgecompile.builddir.atomic import write_json
from edgecompile.models.adapter import ComponentRunner
from edgecompile.validation.gates import GateResult
from edgecompile.validation.polygraphy_compare import (
    COMPARE_DIR,
    REFERENCE_DIR,
    ReferenceRecorder,
    compare_with_reference,
    comparison_gates,
    comparison_metrics,
    load_reference,
)

COMPARISON_FILE = "comparison.json"
LAYERS_FILE = "layers.json"
TOP_LAYERS = 10


def recorder_for(comparison: Any) -> ReferenceRecorder:
    """``comparison``: the recipe's ComparisonSettings."""
    return ReferenceRecorder(comparison.max_iterations)


def save_reference(recorder: ReferenceRecorder, out: Path) -> None:
    """Write the reference and let its arrays go: the comparison and attribution read them from disk."""
    recorder.save(out / REFERENCE_DIR)
    recorder.release()


def compare_candidate(c: Any, out: Path, final: Path, run: ComponentRunner, artifact_dir: Path, artifact: Artifact) -> dict[str, Any]:
    """Polygraphy comparison of a candidate that runs here; writes comparison.json and returns it.

    ``c`` is the recipe's ComparisonSettings; ``out`` the staging directory being written and
    ``final`` the validate directory it becomes (the repeat commands name the final one). Layer
    attribution is a separate step (:func:`attribute_candidate`) so that the caller can close the
    candidate's sessions in between: attribution opens its own, a chunk of tensors at a time.
    """
    files = {comp: artifact_dir / f for comp, f in artifact.components.items()}
    result = compare_with_reference(out / REFERENCE_DIR, out / COMPARE_DIR, run, c, files)
    # Repeat lines run from the build directory (final.parent) with the backend's runner; ONNX artifacts only.
    from edgecompile.bundle.polygraphy_cmd import repeat_commands

    result["commands"] = repeat_commands(artifact.backend, {comp: os.path.relpath(artifact_dir / f, final.parent) for comp, f in artifact.components.items()}, result)
    write_json(out / COMPARISON_FILE, result)
    for comp, line in result["commands"].items():
        print(f"  repeat the {comp} comparison (in {final.parent}): {line}")
    return result


def attribute_candidate(
    c: Any, out: Path, result: dict[str, Any], artifact_dir: Path, artifact: Artifact, exported: dict[str, Path], effective_plan: Path, *, fp16_native: bool
) -> dict[str, Any]:
    """The comparison's metrics, plus per-layer attribution when the recipe asks for it (layers.json,
    and the top layers added to comparison.json). Feeds are the recorded reference run's, from disk."""
    metrics: dict[str, Any] = dict(comparison_metrics(result))
    if not (c.layer_attribution and all(f.endswith(".onnx") for f in artifact.components.values())):
        return metrics
    from edgecompile.plan.plan import PrecisionPlan
    from edgecompile.validation.layer_attribution import attribute_build

    plan = PrecisionPlan.load(effective_plan)
    skipped = _io_types_differ(exported, artifact_dir, artifact.components)
    if skipped:
        result["attribution_skipped"] = skipped
    components = {comp: f for comp, f in artifact.components.items() if comp not in skipped}
    feeds = {comp: load_reference(out / REFERENCE_DIR, comp)[0][: c.layer_samples] for comp in result["components"] if comp not in skipped}
    rows = attribute_build({k: v for k, v in exported.items() if k not in skipped}, artifact_dir, components, list(plan.entries), feeds, fp16_native=fp16_native)
    write_json(out / LAYERS_FILE, {"ranked_by": "added (isolated relative L2 error, artifact session options)", "layers": [r.to_json() for r in rows]})
    for rank, row in enumerate(rows[:TOP_LAYERS]):
        metrics[f"layers.top{rank + 1}"] = f"{row.component}/{row.node}"
    if rows and rows[0].added is not None:
        metrics["layers.max_added_error"] = rows[0].added
    result["top_layers"] = [r.to_json() for r in rows[:TOP_LAYERS]]
    write_json(out / COMPARISON_FILE, result)
    return metrics


def _io_types_differ(exported: dict[str, Path], artifact_dir: Path, components: dict[str, str]) -> dict[str, str]:
    """Components whose artifact takes inputs of another type than the float graph (an INT8 KV cache):
    per-layer attribution replays the reference's float feeds on both graphs, so it cannot run them."""
    import onnx

    skipped = {}
    for comp, file in components.items():
        if comp not in exported:
            continue
        ref = {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(exported[comp]), load_external_data=False).graph.input}
        got = {i.name: i.type.tensor_type.elem_type for i in onnx.load(str(artifact_dir / file), load_external_data=False).graph.input}
        changed = sorted(n for n in ref.keys() & got.keys() if ref[n] != got[n])
        if changed:
            skipped[comp] = f"inputs {', '.join(changed[:3])}{' …' if len(changed) > 3 else ''} change type in the artifact (INT8 KV cache): per-layer attribution replays float feeds, skipped"
    return skipped


def extra_gates(c: Any, out: Path, recorder: ReferenceRecorder) -> list[GateResult]:
    """Comparison gates (when the recipe asks for them); outputs never compared fail. ``c``: ComparisonSettings."""
    if not c.gates:
        return []
    expected = recorder.output_names()
    path = out / COMPARISON_FILE
    result = json.loads(path.read_text()) if path.is_file() else {"components": {}}
    return comparison_gates(result, c, expected)
