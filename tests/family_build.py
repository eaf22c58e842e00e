"""``edgecompile build`` on a tiny checkpoint of any family, with the x86-cpu recipe's precision plan.

A random-weight model scores at chance, so accuracy gates would fail by design (validation/meaning.py);
these recipes keep the x86-cpu target, preset and quantization but gate on export-relative figures
(embedding drift for dual encoders, first-token drift and agreement for generative models)."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
_COMMON = """schema_version: 1
name: {name}
target: x86-cpu
precision_preset: vlm-default
quantization: {{activation_type: uint8, activation_symmetric: false, weight_type: int8, int4_block_size: 16, int4_algorithm: rtn}}
calibration: {{method: minmax, set: synthetic, samples: 4}}
eval: {{set: synthetic, samples: {samples}, latency_runs: 3, warmup_runs: 1}}
budget_gates: false
gates:
"""
DUAL_GATES = """  - {name: image embedding drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.99}
  - {name: text embedding drift, metric: drift.text_encoder.text_embeds.cosine_mean, min: 0.99}
"""
# A random decoder's top tokens are near ties, so whether a greedy token flips after INT4 is luck
# (seen: 0.08 .. 1.0 token agreement across seeds at logits cosine 0.997). The numeric check is the
# first-token logits' drift against the float reference, mean and worst sample.
GENERATIVE_GATES = """  - {name: first-token logits drift, metric: drift.decoder.first_token_logits.cosine_mean, min: 0.98}
  - {name: worst first-token logits drift, metric: drift.decoder.first_token_logits.cosine_min, min: 0.97}
"""


def build_family(root: Path, model: Path, name: str, gates: str, samples: int = 3) -> tuple[Path, int, str]:
    """(build dir, exit code, CLI output) of ``edgecompile build --recipe <x86-cpu-like> --model <model>``."""
    from edgecompile.cli.main import main

    (root / "recipes").mkdir(parents=True, exist_ok=True)
    if not (root / "targets").exists():
        shutil.copytree(REPO / "targets", root / "targets")
    recipe = root / "recipes" / f"{name}.yaml"
    recipe.write_text(_COMMON.format(name=name, samples=samples) + gates)
    build = root / f"build-{name}"
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", str(model), "--out", str(build)])
    return build, result.exit_code, result.output


def assert_generative_build(build: Path, roles: set[tuple[str, str, str]], *, vision_parity: bool = True) -> None:
    """What every generative family's tiny build must show: decoder export parity (prefill, decode,
    greedy argmax), the vision encoder's parity, the expected (component, role, precision) plan
    entries, and a passing verdict."""
    import json

    components = json.loads((build / "manifest.json").read_text())["stages"]["export"]["summary"]["components"]
    parity = components["decoder"]["parity"]
    assert parity["prefill_cosine"] > 0.99999 and parity["decode_cosine"] > 0.99999 and parity["argmax_agreement"] == 1.0
    if vision_parity:
        assert components["vision_encoder"]["parity"]["cosine"] > 0.99999
    plan = json.loads((build / "annotate" / "plan.json").read_text())["entries"]
    assert roles <= {(e["component"], e["role"], e["precision"]) for e in plan if e["weight"]}
    assert json.loads((build / "report.json").read_text())["verdict"] == "pass"
