"""Host + device results as one report: each gate says where its number was measured.

``<build>/validate/report.json`` is the host's (a stage output the manifest hashes: never edited);
``<build>/device/result.json`` is the device's. The merged report is written to
``<build>/report.json`` by the device run and re-made by ``edgecompile report``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgecompile.device import RESULT_FILE
from edgecompile.validation.gates import GateResult, verdict


def host_digest(build_dir: Path) -> str:
    """Which host validation a device result completes (a re-validated build makes older device results stale)."""
    return hashlib.sha256((build_dir / "validate" / "report.json").read_bytes()).hexdigest()


def merged_report(build_dir: Path, host: dict[str, Any]) -> dict[str, Any]:
    """``host`` with the device's gates and metrics folded in (``host`` itself when no device ran)."""
    path = build_dir / RESULT_FILE
    host_where = host.get("where", {}).get("context_label", "host")
    labelled = [{**g, "measured_on": g.get("measured_on") or f"host ({host_where})"} for g in host["gates"]]
    if not path.is_file():
        return {**host, "gates": labelled}
    device = json.loads(path.read_text())
    if device.get("host_report_sha256") != host_digest(build_dir):
        stale = "device results in device/result.json belong to an earlier host validation; run 'python -m edgecompile.device validate' again"
        return {**host, "gates": labelled, "notes": [*host.get("notes", []), stale]}
    by_name = {g["name"]: g for g in device["gates"]}
    gates = [by_name.get(g["name"], g) for g in labelled]
    statuses = [GateResult(g["name"], g["metric"], g["value"], g["threshold"], g["op"], g["status"] == "passed", g.get("reason", ""), g["status"]) for g in gates]
    where = {**host["where"], "description": f"{host['where']['description']} + device: {device['where']['description']}", "device": device["where"]}
    notes = [*host.get("notes", []), f"device validation on {device['where']['description']}: {device['samples']} pack samples; gates marked 'device' were measured there"]
    return {**host, "verdict": verdict(statuses), "gates": gates, "where": where, "device": {"metrics": device["metrics"], "where": device["where"], "samples": device["samples"]}, "notes": notes}
