"""JUnit XML with one test case per gate, so any CI system can show which gate failed and why."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any


def junit_xml(report: dict[str, Any]) -> str:
    """One ``<testsuite>`` named after the recipe; a failed gate is a ``<failure>`` with value and threshold."""
    gates = report.get("gates", [])
    failed = [g for g in gates if not g["passed"]]
    suite = ET.Element("testsuite", name=f"edgecompile.{report.get('recipe', 'build')}", tests=str(len(gates)), failures=str(len(failed)), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    for key in ("recipe", "target", "tier", "model", "verdict"):
        ET.SubElement(props, "property", name=key, value=str(report.get(key, "")))
    ET.SubElement(props, "property", name="where", value=str(report.get("where", {}).get("description", "")))
    for g in gates:
        case = ET.SubElement(suite, "testcase", classname=f"edgecompile.{report.get('recipe', 'build')}.gates", name=g["name"])
        value = "n/a" if g["value"] is None else f"{g['value']:.6g}"
        line = f"{g['metric']} = {value} {g['op']} {g['threshold']:.6g}"
        if not g["passed"]:
            failure = ET.SubElement(case, "failure", message=line + (f" ({g['reason']})" if g.get("reason") else ""), type="GateFailed")
            failure.text = line
        else:
            ET.SubElement(case, "system-out").text = line
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
