"""JUnit per gate, Pareto frontier on hand-made points, the HTML/Markdown reports and the CLI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from edgecompile.cli.main import main
from edgecompile.reports.junit import junit_xml
from edgecompile.reports.pareto import Point, feasible, frontier, tier_frontiers


def _gate(name: str, value: float | None, passed: bool) -> dict:
    return {"name": name, "metric": f"m.{name}", "value": value, "threshold": 1.0, "op": "<=", "passed": passed, "reason": "" if value is not None else "metric could not be computed"}


def test_junit_one_case_per_gate_with_failures() -> None:
    report = {"recipe": "r", "target": "t", "verdict": "fail", "where": {"description": "here"}, "gates": [_gate("a", 0.5, True), _gate("b", 2.0, False), _gate("c", None, False)]}
    suite = ET.fromstring(junit_xml(report).split("\n", 1)[1])
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a", "b", "c"]
    assert suite.get("tests") == "3" and suite.get("failures") == "2"
    assert cases[0].find("failure") is None
    assert "2 <= 1" in cases[1].find("failure").get("message")
    assert "n/a" in cases[2].find("failure").get("message")


def test_pareto_frontier_hand_made() -> None:
    pts = [
        Point("fp16", 0.90, 14.7, 1200.0),
        Point("w8", 0.90, 90.0, 600.0),  # worse latency, better memory: on the frontier
        Point("w8-worse", 0.89, 95.0, 700.0),  # dominated by w8
        Point("w4", 0.68, 150.0, 400.0),  # least memory: on the frontier
        Point("slow", 0.95, 400.0, 300.0),  # best accuracy but over every latency budget
        Point("unmeasured", None, 10.0, 10.0),
    ]
    assert [p.name for p in frontier(pts)] == ["fp16", "w8", "w4", "slow"]
    assert [p.name for p in feasible(pts, 1000, 100)] == ["w8", "w8-worse"]
    tiers = tier_frontiers(pts, {"embedded": (4096, 150.0), "edge_server": (16384, 30.0), "tiny": (500, 150.0)})
    assert [p.name for p in tiers["embedded"]["frontier"]] == ["fp16", "w8", "w4"]
    assert [p.name for p in tiers["edge_server"]["frontier"]] == ["fp16"]
    assert [p.name for p in tiers["tiny"]["frontier"]] == ["w4"]


def test_build_reports_written_by_validate(built: Path) -> None:
    v = built / "validate"
    md = (v / "report.md").read_text()
    assert "## Gates" in md and "Polygraphy" in md and "polygraphy run" in md and "Layers adding the most error" in md
    html = (v / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table" in html and "src=\"http" not in html
    assert 'id="verdict"' in html and 'data-plot="per-layer error"' in html and 'data-plot="latency and size"' in html
    suite = ET.fromstring((v / "report.junit.xml").read_text().split("\n", 1)[1])
    import json

    report = json.loads((v / "report.json").read_text())
    assert len(suite.findall("testcase")) == len(report["gates"])


def test_help_for_new_commands() -> None:
    for command in ("robustness", "sweep", "report"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_report_cli_aggregates(built: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(built), str(tmp_path), "--out", str(tmp_path / "agg")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "agg" / "report.md").read_text()
    assert "| Config | Clean Acc | RS (up) | mCE (seed: abs drop, down) | CE (norm. to FP32, down) | Size (MB) | Compression |" in md
    assert "embedded" in md and [p.stat().st_size > 1000 for p in (tmp_path / "agg").glob("pareto_*_embedded.png")] == [True]
    assert (built / "report.html").is_file()  # refreshed at the build's top, validate/ untouched
    empty = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert empty.exit_code == 3
