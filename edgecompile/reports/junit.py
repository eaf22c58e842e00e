"""JUnit XML with one test case per gate, so any CI system can show which gate failed and why."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any


def junit_xml(report: dict[str, Any]) -> str:
    """One ``<testsuite>`` named after the recipe; a failed gate is a ``<failure>`` with value and threshold, a pending one ``<skipped>`` with its reason."""
    gates = report.get("gates", [])
    status = [g.get("status") or ("passed" if g["passed"] else "failed") for g in gates]
    failed, pending = status.count("failed"), status.count("pending")
    suite = ET.Element("testsuite", name=f"edgecompile.{report.get('recipe', 'build')}", tests=str(len(gates)), failures=str(failed), errors="0", skipped=str(pending))
    props = ET.SubElement(suite, "properties")
    for key in ("recipe", "target", "tier", "model", "verdict"):
        ET.SubElement(props, "property", name=key, value=str(report.get(key, "")))
    ET.SubElement(props, "property", name="where", value=str(report.get("where", {}).get("description", "")))
    for g, state in zip(gates, status, strict=True):
        case = ET.SubElement(suite, "testcase", classname=f"edgecompile.{report.get('recipe', 'build')}.gates", name=g["name"])
        value = "n/a" if g["value"] is None else f"{g['value']:.6g}"
        line = f"{g['metric']} = {value} {g['op']} {g['threshold']:.6g}"
        if state == "pending":  # not measurable on this machine: skipped, with where it will be measured
            ET.SubElement(case, "skipped", message=line + (f" (pending: {g['reason']})" if g.get("reason") else " (pending)"))
        elif state == "failed":
            failure = ET.SubElement(case, "failure", message=line + (f" ({g['reason']})" if g.get("reason") else ""), type="GateFailed")
            failure.text = line
        else:
            ET.SubElement(case, "system-out").text = line
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
