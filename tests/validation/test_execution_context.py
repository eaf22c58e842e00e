"""Verdicts earned on the machine they name: passed, failed, or pending on the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecompile.stages.context import recorded_recipe
from click.testing import CliRunner

from edgecompile.cli.main import main
from edgecompile.reports.junit import junit_xml
from edgecompile.validation.execution import EMULATOR, NATIVE, NOT_EXECUTED, OTHER_ARCH, STAND_IN, execution_context
from edgecompile.validation.gates import GateResult, pending_gate, verdict


@pytest.mark.parametrize(
    ("runtime", "runs", "arch", "kind"),
    [("native", True, "x86_64", NATIVE), ("native", True, "any", NATIVE), ("native", True, "aarch64", OTHER_ARCH), ("emulator", True, "aarch64", EMULATOR), ("stand_in", True, "aarch64", STAND_IN), ("native", False, "aarch64", NOT_EXECUTED)],
)
def test_context_kinds(runtime: str, runs: bool, arch: str, kind: str) -> None:
    assert execution_context("b", runtime, runs, arch, machine="x86_64").kind == kind


def test_what_each_context_measures() -> None:
    native = execution_context("ort-cpu", "native", True, "x86_64", machine="x86_64")
    arm = execution_context("ort-cpu", "native", True, "aarch64", machine="x86_64")
    htp = execution_context("qnn", "emulator", True, "aarch64", machine="x86_64")
    mac = execution_context("coreml", "native", False, "aarch64", machine="x86_64")
    for metric in ("latency.p90_ms", "memory.peak_mb", "generation.ttft_ms", "generation.decode_tokens_per_s"):
        assert native.measures(metric)[0]
        truthful, why = arm.measures(metric)
        assert not truthful and "not on the target's aarch64" in why
        assert not htp.measures(metric)[0] and "emulator" in htp.measures(metric)[1]
    for metric in ("accuracy.drop", "drift.vision_encoder.image_embeds.cosine_mean", "generation.token_agreement"):
        assert arm.measures(metric)[0] and htp.measures(metric)[0]
        assert not mac.measures(metric)[0]
    assert mac.measures("size.compression_ratio")[0] and mac.measures("coreml.io_match")[0]


def test_verdict_order_and_junit_skips_pending() -> None:
    ok = GateResult("a", "accuracy.drop", 0.0, 0.02, "<=", True)
    bad = GateResult("b", "accuracy.drop", 0.5, 0.02, "<=", False)
    wait = pending_gate("latency budget", "latency.p90_ms", {"latency.p90_ms": 12.0}, None, 80.0, "measured on x86_64")
    assert ok.status == "passed" and bad.status == "failed" and wait.status == "pending" and wait.value == 12.0
    assert verdict([ok]) == "pass" and verdict([ok, wait]) == "pending" and verdict([ok, wait, bad]) == "fail"
    xml = junit_xml({"recipe": "r", "gates": [ok.to_json(), wait.to_json()], "where": {}})
    assert 'skipped="1"' in xml and "<skipped" in xml and "pending: measured on x86_64" in xml and 'failures="0"' in xml


def test_arm64_recipe_built_on_x86_ends_pending_with_budgets_waiting(build_copy: Path) -> None:
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"this test builds an aarch64 target on a different architecture; this machine is {platform.machine()}")
    recipe = recorded_recipe(build_copy)
    recipe.write_text(recipe.read_text().replace("target: x86-cpu", "target: arm64-cpu"))
    result = CliRunner().invoke(main, ["build", "--build", str(build_copy)])
    assert result.exit_code == 6, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("PENDING | tiny | 1 passed, 2 pending on device: latency budget, memory budget"), last
    report = json.loads((build_copy / "report.json").read_text())
    assert report["verdict"] == "pending" and report["where"]["context"] == "other_arch"
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["image drift"]["status"] == "passed"  # numerics measured here with the same kernels: they count
    assert gates["latency budget"]["status"] == "pending" and gates["latency budget"]["value"] > 0  # the host's number, kept for information
    # A recipe may accept this machine's number, and the report says so.
    recipe.write_text(recipe.read_text() + "accept_measured_here: [latency.p90_ms, memory.peak_mb]\n")
    result = CliRunner().invoke(main, ["validate", "--build", str(build_copy)])
    report = json.loads((build_copy / "report.json").read_text())
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["latency budget"]["status"] in ("passed", "failed") and "accepted by the recipe" in gates["latency budget"]["reason"]
    assert result.exit_code in (0, 1), result.output


def test_generative_budgets_default_per_tier_and_can_be_set() -> None:
    from edgecompile.config.target import Target

    base = {"schema_version": 1, "name": "t", "description": "d", "backend": "ort-cpu"}
    assert (Target(**base, tier="mobile").ttft_budget_ms, Target(**base, tier="mobile").min_decode_tokens_per_s) == (800.0, 10.0)
    custom = Target(**base, tier="embedded", ttft_budget_ms=250.0, min_decode_tokens_per_s=12.0)
    assert (custom.ttft_budget_ms, custom.min_decode_tokens_per_s, custom.latency_budget_ms) == (250.0, 12.0, 150.0)
