"""Error types that carry their own exit code, so the CLI can tell outcomes apart.

User errors (bad recipe, missing model, unavailable backend) render as one line without a
traceback; anything else escaping the CLI is an internal bug and keeps its traceback.
"""

from __future__ import annotations


class ExitCode:
    """Documented process exit codes (also listed in README.md)."""

    PASSED = 0
    GATE_FAILED = 1
    USAGE = 2  # click's own code for a bad command line
    BAD_INPUT = 3
    BACKEND_UNAVAILABLE = 4
    STAGE_FAILED = 5
    PENDING = 6  # no gate failed, but some can only be measured on the device (see validation/execution.py)
    INTERNAL = 70


class EdgecompileError(Exception):
    """Base class for errors a user can act on."""

    exit_code = ExitCode.BAD_INPUT


class InputError(EdgecompileError):
    """A recipe, target, model, calibration set or build directory is not what was expected."""

    exit_code = ExitCode.BAD_INPUT


class BackendUnavailable(EdgecompileError):
    """The backend a target needs cannot run or build on this machine; the message says why."""

    exit_code = ExitCode.BACKEND_UNAVAILABLE


class StageError(EdgecompileError):
    """A stage failed; the message names the stage and the stages that ran before it."""

    exit_code = ExitCode.STAGE_FAILED

    def __init__(self, stage: str, message: str, completed: tuple[str, ...] = ()) -> None:
        before = ", ".join(completed) if completed else "none"
        super().__init__(f"stage '{stage}' failed: {message} (stages completed before it: {before})")
        self.stage = stage
        self.detail = message
