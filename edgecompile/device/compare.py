"""``python -m edgecompile.device compare --build DIR --component C``: repeat validate's Polygraphy
comparison of one component from the saved reference, with the artifact on this machine's runtime.

The repeat line for QNN HTP context models (``polygraphy run --providers`` matches only ONNX
Runtime's built-in providers, and a context model runs nowhere but on QNN): the device runner's
outputs go to Polygraphy's Comparator with the thresholds validate used (validate/comparison.json).
Needs polygraphy beside the runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def compare(build_dir: Path, component: str) -> tuple[bool, dict[str, Any]]:
    """(every output within its thresholds, per-output summary)."""
    from polygraphy.comparator import IterationResult, RunResults

    from edgecompile.device.pack import DevicePack, PackError
    from edgecompile.device.runtimes import open_runner
    from edgecompile.validation.polygraphy_compare import CANDIDATE_RUNNER, compare_component, load_reference

    pack = DevicePack.open(build_dir)
    path = build_dir / "validate" / "comparison.json"
    saved = json.loads(path.read_text()) if path.is_file() else {}
    rows = saved.get("components", {}).get(component)
    if not rows:
        raise PackError(f"{path}: no comparison of component '{component}' (compared: {sorted(saved.get('components', {}))})")
    tolerances = {f"{component}/{name}": SimpleNamespace(atol=r["atol"], rtol=r["rtol"], min_cosine=r["min_cosine"]) for name, r in rows.items()}
    settings = SimpleNamespace(outputs=tolerances, default=next(iter(tolerances.values())), error_stat=next(iter(rows.values()))["error_stat"])
    d = pack.description
    run = open_runner(d["backend"], {component: pack.artifact_path(component)}, d.get("backend_extra", {}))
    feeds, reference = load_reference(build_dir / "validate" / "reference", component)
    candidate = RunResults()
    candidate.add([IterationResult(run(component, f), runner_name=CANDIDATE_RUNNER) for f in feeds], runner_name=CANDIDATE_RUNNER)
    _, summary = compare_component(reference, candidate, settings, component)
    return all(r["simple_passed"] and r["cosine_passed"] for r in summary.values()), summary
