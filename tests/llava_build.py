"""One tiny-Llava end-to-end build per test process, shared by the generative-model tests (export is the slow part)."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from tests.tiny_llava import save_tiny_llava

REPO = Path(__file__).resolve().parents[1]
RECIPE = """schema_version: 1
name: llava-tiny
target: x86-cpu
precision_preset: vlm-default
quantization: {{int4_block_size: 16, int4_algorithm: {algorithm}}}
calibration: {{method: minmax, set: synthetic, samples: 4}}
eval: {{set: synthetic, samples: 3, latency_runs: 3, warmup_runs: 1}}
gates:
  - {{name: first-token logits drift, metric: drift.decoder.first_token_logits.cosine_mean, min: 0.9}}
  - {{name: first token agreement, metric: generation.first_token_agreement, min: 0.6}}
budget_gates: false
"""

_CACHE: dict[str, tuple[Path, Path, int, str]] = {}


def built_llava(root: Path, algorithm: str = "gptq") -> tuple[Path, Path, int, str]:
    """(model dir, build dir, exit code, CLI output) of ``edgecompile build`` on a tiny Llava."""
    if algorithm in _CACHE:
        return _CACHE[algorithm]
    from edgecompile.cli.main import main

    model = save_tiny_llava(root / "llava-tiny-model")
    (root / "recipes").mkdir(exist_ok=True)
    if not (root / "targets").exists():
        shutil.copytree(REPO / "targets", root / "targets")
    recipe = root / "recipes" / "llava-tiny.yaml"
    recipe.write_text(RECIPE.format(algorithm=algorithm))
    build = root / f"build-{algorithm}"
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", str(model), "--out", str(build)])
    _CACHE[algorithm] = (model, build, result.exit_code, result.output)
    return _CACHE[algorithm]
