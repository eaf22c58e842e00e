"""Where a validation ran, and which metrics that place can measure truthfully.

A verdict is earned on the machine it names. Accuracy and drift computed by the target's own
kernels, by the HTP emulator (which reproduces the NPU's arithmetic) or by a stand-in runtime
executing the very same graph are measured numbers, labelled with where they came from. Latency
and memory are the device's only when the target's own runtime ran on the target's own CPU
architecture: an x86-64 host, an emulator or a stand-in gives a number, but not that one. Gates on
metrics this machine cannot measure are *pending*: they are completed on the device.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass

NATIVE, OTHER_ARCH, EMULATOR, STAND_IN, NOT_EXECUTED = "native", "other_arch", "emulator", "stand_in", "not_executed"

# Metrics that do not depend on executing the artifact (sizes, the backends' structural checks).
_STATIC = re.compile(r"^(size\.|coreml\.|ort_coreml_ep\.|qnn\.|tensorrt\.|executorch\.)")
# Metrics that are properties of the device: time and memory.
_PERFORMANCE = re.compile(r"^(latency\.|memory\.|generation\.(ttft_ms|decode_tokens_per_s))")


def _normal_arch(arch: str) -> str:
    return {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}.get(arch.lower(), arch.lower())


@dataclass(frozen=True)
class ExecutionContext:
    """How the artifact was executed here, relative to the target it was built for."""

    kind: str
    machine: str
    target_arch: str
    backend: str

    def measures(self, metric: str) -> tuple[bool, str]:
        """(whether ``metric`` measured here is the target's own, the reason when it is not)."""
        if _STATIC.match(metric):
            return True, ""
        if self.kind == NOT_EXECUTED:
            return False, f"the {self.backend} artifact cannot execute on this machine ({self.machine}); completed on the device by 'edgecompile validate --build DIR'"
        if not _PERFORMANCE.match(metric) or self.kind == NATIVE:
            return True, ""
        if self.kind == OTHER_ARCH:
            return False, f"measured on {self.machine}, not on the target's {self.target_arch}; completed on the device"
        if self.kind == EMULATOR:
            return False, "measured on the HTP emulator on x86-64, whose time and memory are not the NPU's; completed on the device"
        return False, f"measured on a stand-in runtime, not on {self.backend} on the device; completed on the device"

    @property
    def label(self) -> str:
        return {NATIVE: "the target's runtime on its architecture", OTHER_ARCH: f"the target's runtime on {self.machine} (target: {self.target_arch})", EMULATOR: "emulator", STAND_IN: "stand-in runtime", NOT_EXECUTED: "not executed"}[self.kind]


def execution_context(backend: str, runtime_kind: str, runs_here: bool, target_arch: str, machine: str | None = None) -> ExecutionContext:
    """``runtime_kind`` is what the backend says of its runner here: native, emulator or stand_in."""
    machine = _normal_arch(machine or platform.machine())
    if not runs_here:
        kind = NOT_EXECUTED
    elif runtime_kind in (EMULATOR, STAND_IN):
        kind = runtime_kind
    elif target_arch not in ("any", "") and _normal_arch(target_arch) != machine:
        kind = OTHER_ARCH
    else:
        kind = NATIVE
    return ExecutionContext(kind, machine, target_arch, backend)
