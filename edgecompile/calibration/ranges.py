"""TensorRanges: per-tensor (low, high) activation ranges, saved as JSON in the build directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FP16_MAX = 65504.0


@dataclass(frozen=True)
class TensorRanges:
    """Ranges of one component's activations, and how they were measured."""

    method: str
    ranges: dict[str, tuple[float, float]]
    samples: int

    def to_json(self) -> dict:
        return {"method": self.method, "samples": self.samples, "ranges": {k: [float(lo), float(hi)] for k, (lo, hi) in self.ranges.items()}}

    @classmethod
    def from_json(cls, data: dict) -> TensorRanges:
        return cls(data["method"], {k: (float(v[0]), float(v[1])) for k, v in data["ranges"].items()}, int(data["samples"]))

    def overflows_fp16(self, tensor: str) -> bool:
        lo, hi = self.ranges.get(tensor, (0.0, 0.0))
        return max(abs(lo), abs(hi)) > FP16_MAX

    def to_ort(self):  # noqa: ANN201 - onnxruntime type, imported lazily
        """As onnxruntime.quantization's TensorsData, for its QDQ quantizer."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        data = {k: TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32)) for k, (lo, hi) in self.ranges.items()}
        return TensorsData(CalibrationMethod.MinMax, data)


def save_ranges(path: Path, per_component: dict[str, TensorRanges]) -> None:
    path.write_text(json.dumps({c: r.to_json() for c, r in per_component.items()}, indent=1))


def load_ranges(path: Path) -> dict[str, TensorRanges]:
    return {c: TensorRanges.from_json(d) for c, d in json.loads(path.read_text()).items()}
