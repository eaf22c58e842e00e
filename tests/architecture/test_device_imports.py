"""edgecompile.device runs where only numpy and a device runtime are installed: it imports none of the host's stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("torch", "transformers", "pydantic", "onnx", "click", "PIL", "jinja2", "polygraphy", "torchao", "executorch", "coremltools", "tensorrt", "onnxruntime_qnn", "yaml")

PROBE = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
import edgecompile.device, edgecompile.device.__main__, edgecompile.device.validate, edgecompile.device.runtimes, edgecompile.device.probe, edgecompile.device.compare, edgecompile.device.merge
import edgecompile.runtime.generate
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})
print('LOADED', loaded)
"""


def test_edgecompile_device_imports_without_torch_transformers_pydantic_or_onnx() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout


def test_the_probe_would_notice_a_heavy_import() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE.replace("import edgecompile.runtime.generate", "import edgecompile.stages.validate")], cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode != 0 and "blocked" in done.stderr
