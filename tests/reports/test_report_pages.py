"""The report pages render in headless Chromium with their key elements (skipped without Chromium)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import check_reports  # noqa: E402

CHROMIUM = check_reports.find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium); scripts/check_reports.py does the same check by hand")


def test_page_check_finds_what_is_wrong_without_a_browser(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text('<html><body><img src="https://example.com/x.png"><div id="gates"></div></body></html>')
    assert check_reports.page_kind(page.read_text()) == "build"
    if CHROMIUM is None:
        pytest.skip("the rest needs Chromium")
    problems = check_reports.check_page(CHROMIUM, page, None)["problems"]
    assert any("network" in p for p in problems) and any("verdict" in p for p in problems) and any("no embedded plot" in p for p in problems)


@needs_chromium
def test_build_and_sweep_pages_render(built: Path, tmp_path: Path) -> None:
    from edgecompile.cli.main import main

    result = CliRunner().invoke(main, ["report", str(built), "-o", str(tmp_path / "agg")])
    assert result.exit_code == 0, result.output
    for page, kind in ((built / "report.html", "build"), (tmp_path / "agg" / "report.html", "sweep")):
        shot = tmp_path / f"{kind}.png"
        found = check_reports.check_page(CHROMIUM, page, shot)
        assert found["problems"] == [] and found["kind"] == kind and found["verdict"] in ("passed", "failed", "pending")
        assert shot.stat().st_size > 20_000
