"""Without onnxruntime-qnn the qnn backend is listed, unavailable, and says why; the CLI still works."""

from __future__ import annotations

import sys

import pytest

from edgecompile.backends.qnn import session as qnn_session
from edgecompile.backends.registry import get_backend


def test_missing_sdk_disables_only_qnn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import fails as if not installed
    monkeypatch.setattr(qnn_session, "_REGISTERED", [])
    available = get_backend("qnn").availability()
    assert not available.can_build and not available.can_run
    assert "onnxruntime-qnn is not installed" in available.reason
    assert get_backend("ort-cpu").availability().can_run


def test_backends_command_lists_qnn() -> None:
    from click.testing import CliRunner

    from edgecompile.cli.main import main

    result = CliRunner().invoke(main, ["backends"])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("qnn ") for line in result.output.splitlines())
