"""Which gates the device may decide: the execution-context table, applied to a real x86 build's pack."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from device.shapes_builds import shapes_build
from edgecompile.device.validate import _judge
from edgecompile.validation.execution import execution_context


def test_an_aarch64_target_keeps_latency_and_memory_pending_on_x86_and_decides_accuracy(tmp_path_factory: pytest.TempPathFactory) -> None:
    build = shapes_build(tmp_path_factory, "x86-cpu")
    pack = json.loads((build / "validate" / "device_pack" / "pack.json").read_text())
    host = json.loads((build / "validate" / "report.json").read_text())
    metrics = {**host["metrics"]}
    context = execution_context("ort-cpu", "native", True, "aarch64", machine="x86_64")
    gates = {g["name"]: g for g in _judge(pack["gates"], host["gates"], metrics, context, set())}
    assert gates["latency budget"]["status"] == gates["memory budget"]["status"] == "pending"
    assert "not on the target's aarch64" in gates["latency budget"]["reason"]
    assert gates["accuracy drop"]["status"] == "passed"
    on_arm = {g["name"]: g for g in _judge(pack["gates"], host["gates"], metrics, execution_context("ort-cpu", "native", True, "aarch64", machine="aarch64"), set())}
    assert on_arm["latency budget"]["status"] == "passed"
    accepted = {g["name"]: g for g in _judge(pack["gates"], host["gates"], metrics, context, {"latency.p90_ms"})}
    assert accepted["latency budget"]["status"] == "passed" and "accept_measured_here" in accepted["latency budget"]["reason"]


def test_the_pack_is_bounded_and_holds_only_relative_paths(tmp_path_factory: pytest.TempPathFactory) -> None:
    build = shapes_build(tmp_path_factory, "x86-cpu")
    pack = json.loads((build / "validate" / "device_pack" / "pack.json").read_text())
    assert pack["mode"] == "calls" and 0 < pack["samples"] <= 1000
    assert all(not p.startswith("/") and (build / p).is_file() for p in pack["artifacts"].values())
    assert pack["task"]["kind"] == "zero_shot" and len(pack["task"]["labels"]) == pack["eval_samples"] == 24
    assert str(build) not in (build / "validate" / "device_pack" / "pack.json").read_text()


def test_host_cli_device_validate_and_report_show_the_merge(tmp_path_factory: pytest.TempPathFactory, tmp_path) -> None:  # noqa: ANN001
    import shutil

    from edgecompile.cli.main import main

    build = tmp_path / "b"
    shutil.copytree(shapes_build(tmp_path_factory, "x86-cpu"), build)
    result = CliRunner().invoke(main, ["device", "validate", "--build", str(build)])
    assert result.exit_code == 0, result.output
    assert "[device (the target's runtime on its architecture, x86_64)]" in result.output
    result = CliRunner().invoke(main, ["report", str(build), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    merged = json.loads((build / "report.json").read_text())
    assert "device" in merged and "+ device:" in merged["where"]["description"]


def test_a_stale_device_result_is_not_merged(tmp_path_factory: pytest.TempPathFactory, tmp_path) -> None:  # noqa: ANN001
    import shutil

    from edgecompile.device.merge import merged_report

    build = tmp_path / "b"
    shutil.copytree(shapes_build(tmp_path_factory, "x86-cpu"), build)
    (build / "device").mkdir(exist_ok=True)
    (build / "device" / "result.json").write_text(json.dumps({"host_report_sha256": "0" * 64, "gates": [], "where": {}, "metrics": {}, "samples": 1}))
    host = json.loads((build / "validate" / "report.json").read_text())
    merged = merged_report(build, host)
    assert "device" not in merged and any("earlier host validation" in n for n in merged["notes"])


def test_a_build_without_a_pack_is_bad_input(tmp_path) -> None:  # noqa: ANN001
    from edgecompile.device.__main__ import main

    assert main(["validate", "--build", str(tmp_path)]) == 3
