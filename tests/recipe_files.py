"""Recipe files for tests: a tiny recipe in a folder with the repository's targets beside it."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY_RECIPE = """schema_version: 1
name: {name}
target: x86-cpu
calibration: {{method: {method}, set: synthetic, samples: 8}}
eval: {{set: synthetic, samples: 16, latency_runs: 5, warmup_runs: 1}}
gates:
  - {{name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: {min_cosine}}}
"""


def write_recipe(folder: Path, name: str = "tiny", method: str = "minmax", min_cosine: float = 0.9, extra: str = "") -> Path:
    """A recipe in ``folder/recipes`` with the repository's targets beside it."""
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    targets = folder / "targets"
    if not targets.exists():
        shutil.copytree(REPO / "targets", targets)
    path = folder / "recipes" / f"{name}.yaml"
    path.write_text(TINY_RECIPE.format(name=name, method=method, min_cosine=min_cosine) + extra)
    return path
