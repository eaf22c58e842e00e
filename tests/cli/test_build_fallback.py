"""`edgecompile build --fallback` runs the precision fallback search from the CLI: a build that
already passes ends at step 0, and --json carries the steps; --force is refused with it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgecompile.cli.main import main


def test_fallback_on_a_passing_build_stops_at_step_0(build_copy: Path) -> None:
    result = CliRunner().invoke(main, ["build", "-b", str(build_copy), "--fallback", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["verdict"] == "pass"
    assert payload["fallback"]["status"] == "PASSED"
    assert len(payload["fallback"]["steps"]) == 1 and payload["fallback"]["final_step"] == 0
    assert (build_copy / "fallback" / "rules.yaml").is_file()


def test_fallback_with_force_is_a_usage_error(build_copy: Path) -> None:
    result = CliRunner().invoke(main, ["build", "-b", str(build_copy), "--fallback", "--force"])
    assert result.exit_code == 2, result.output
    assert "--force" in result.output
