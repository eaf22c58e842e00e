"""A recipe rule ``{component: decoder, role: kv_cache, precision: int8}`` builds and validates an INT8-cache decoder end to end.

The unit of the cache itself (scales, agreement with the FP32 cache on shapes-llava) is tested in
tests/runtime/test_int8_kv_cache.py; this is the wiring: the ORT CPU build applies it after the
fusion, Q/DQ and calibration leave the cache Concats alone, validate's generation and latency
probe run the INT8 graph, and every other backend keeps a float cache with the reason recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from tests.llava_build import REPO, RECIPE
from tests.tiny_llava import save_tiny_llava

INT8_RULE = "rules:\n  - {match: {component: decoder, role: kv_cache}, precision: int8, why: 'test: INT8 KV cache'}\n"


def _project(root: Path, target: str) -> Path:
    import shutil

    (root / "recipes").mkdir(parents=True, exist_ok=True)
    if not (root / "targets").exists():
        shutil.copytree(REPO / "targets", root / "targets")
    recipe = root / "recipes" / "llava-tiny.yaml"
    recipe.write_text(RECIPE.format(algorithm="rtn").replace("target: x86-cpu", f"target: {target}") + INT8_RULE)
    return recipe


@pytest.mark.slow
def test_an_int8_kv_cache_rule_builds_and_validates_on_ort_cpu(tmp_path: Path) -> None:
    from edgecompile.cli.main import main

    model = save_tiny_llava(tmp_path / "model")
    recipe = _project(tmp_path, "x86-cpu")
    out = tmp_path / "build"
    result = CliRunner().invoke(main, ["build", "--recipe", str(recipe), "--model", str(model), "-o", str(out)])
    assert result.exit_code in (0, 1), result.output
    decoder = onnx.load(str(out / "build" / "decoder.onnx"), load_external_data=False)
    pasts = [i for i in decoder.graph.input if i.name.startswith("past_")]
    assert pasts and all(i.type.tensor_type.elem_type == onnx.TensorProto.INT8 for i in pasts)
    gqa = [n for n in decoder.graph.node if n.op_type == "GroupQueryAttention"]
    assert gqa and all({a.name: a.i for a in n.attribute if a.name == "kv_cache_bit_width"} == {"kv_cache_bit_width": 8} for n in gqa)
    assert not [n for n in decoder.graph.node if n.op_type == "QuantizeLinear" and "present" in "".join(n.output)]
    notes = json.loads((out / "build" / "artifact.json").read_text())["notes"]
    assert any("INT8 KV cache" in n for n in notes), notes
    report = json.loads((out / "validate" / "report.json").read_text())
    metrics = {m["metric"]: m["value"] for m in report["metrics"]} if isinstance(report.get("metrics"), list) else report.get("metrics", {})
    assert "generation.first_token_agreement" in json.dumps(report)
    assert "latency" in json.dumps(metrics) or "latency" in json.dumps(report)


def test_other_backends_keep_a_float_cache_with_the_reason() -> None:
    from edgecompile.backends.registry import get_backend

    assert get_backend("ort-cpu").int8_kv_cache
    assert not any(get_backend(name).int8_kv_cache for name in ("qnn", "tensorrt", "coreml", "executorch"))
