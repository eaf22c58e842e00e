"""TensorRT refuses INT4 settings it would not honour (exit 3, naming the field) instead of building something else."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edgecompile.backends.tensorrt.backend import refuse_unhonoured_int4
from edgecompile.errors import ExitCode, InputError
from edgecompile.plan.plan import PlanEntry


def _entry(precision: str, symmetric: bool = True, rule: str = "decoder linears int4") -> PlanEntry:
    return PlanEntry("decoder", "n0", "MatMul", "decoder_linear", "m.layers.0.q", "w0", precision, "per_block", 32, symmetric, rule, "test")


def _inputs(entries: list[PlanEntry], algorithm: str = "rtn", prequantized: dict | None = None) -> SimpleNamespace:
    plan = SimpleNamespace(for_component=lambda c: entries)
    recipe = SimpleNamespace(name="jetson-agx-orin", quantization=SimpleNamespace(int4_algorithm=algorithm))
    return SimpleNamespace(exported={"decoder": Path("decoder.onnx")}, plan=plan, recipe=recipe, prequantized=prequantized or {})


def test_gptq_is_refused_naming_the_field() -> None:
    with pytest.raises(InputError) as refused:
        refuse_unhonoured_int4(_inputs([_entry("int4")], algorithm="gptq"))
    assert "quantization.int4_algorithm: 'gptq'" in str(refused.value) and refused.value.exit_code == ExitCode.BAD_INPUT
    with pytest.raises(InputError):  # GPTQ codes handed on by the transform stage: the same
        refuse_unhonoured_int4(_inputs([_entry("int4")], prequantized={"decoder": Path("codes.safetensors")}))


def test_asymmetric_int4_is_refused_naming_the_rule() -> None:
    with pytest.raises(InputError) as refused:
        refuse_unhonoured_int4(_inputs([_entry("int4", symmetric=False, rule="my asymmetric int4")]))
    assert "'my asymmetric int4': symmetric: false" in str(refused.value)


def test_what_is_honoured_passes() -> None:
    refuse_unhonoured_int4(_inputs([_entry("int4")]))
    refuse_unhonoured_int4(_inputs([_entry("int8", symmetric=False)], algorithm="gptq"))  # no INT4 weights: nothing to round
