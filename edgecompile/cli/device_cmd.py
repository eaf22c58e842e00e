"""``edgecompile device validate|compare --build DIR``: the on-device validation, from the full CLI.

The same code as ``python -m edgecompile.device`` (which is what a device without torch runs);
this form is for a device or host that has edgecompile installed whole.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgecompile.cli.common import handle_errors
from edgecompile.errors import BackendUnavailable, InputError

_BUILD = click.option("--build", "build_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True), help="Build directory (with validate/device_pack/).")


@click.group("device")
def device_group() -> None:
    """Complete a build's pending gates on the device it was built for (numpy + the device runtime)."""


def _device_errors():  # noqa: ANN202 - a context manager translating the device package's errors
    from contextlib import contextmanager

    from edgecompile.device.pack import PackError
    from edgecompile.device.runtimes import RuntimeUnavailable

    @contextmanager
    def translate():  # noqa: ANN202
        try:
            yield
        except PackError as exc:
            raise InputError(str(exc)) from None
        except RuntimeUnavailable as exc:
            raise BackendUnavailable(str(exc)) from None

    return translate()


@device_group.command("validate")
@_BUILD
@handle_errors
def device_validate_cmd(build_dir: Path) -> None:
    """Run the device pack here, decide the gates this machine can measure, merge into report.json."""
    from edgecompile.device.__main__ import verdict_line
    from edgecompile.device.validate import validate_on_device

    with _device_errors():
        report = validate_on_device(build_dir)
    sys.exit(verdict_line(report, build_dir / "report.json"))


@device_group.command("compare")
@_BUILD
@click.option("--component", required=True, help="Component to compare (e.g. vision_encoder).")
@handle_errors
def device_compare_cmd(build_dir: Path, component: str) -> None:
    """Repeat validate's Polygraphy comparison of one component on this machine's runtime."""
    from edgecompile.device.__main__ import main as device_main

    sys.exit(device_main(["compare", "--build", str(build_dir), "--component", component]))
