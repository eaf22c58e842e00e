"""The seed-002 presets: W4A8 is static (calibrated INT8 activations), w4a8-dyn is MatMulNBits'
run-time INT8, INT4 per-channel is a granularity of its own, and the SQ/AWQ presets name their transforms."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgecompile.plan.rules import PRESET_TRANSFORMS, PRESETS, PrecisionRule, RuleMatch, rules_for


def _int4(preset: str) -> list[PrecisionRule]:
    return [r for r in PRESETS[preset] if r.precision == "int4"]


def test_w4a8_is_static_and_w4a8_dyn_is_dynamic() -> None:
    assert {r.activations for r in _int4("w4a8")} == {"static"}
    assert {r.activations for r in _int4("w4a8-awq")} == {"static"}
    assert {r.activations for r in _int4("w4a8-dyn")} == {"dynamic"}
    assert {r.activations for r in _int4("vlm-default")} == {"dynamic"}  # weight-only decoder linears as before


def test_presets_name_their_transforms() -> None:
    assert PRESET_TRANSFORMS == {"w8a8-sq": ("smoothquant",), "w4a8-awq": ("awq",)}
    assert [r.precision for r in PRESETS["w8a8-sq"]] == [r.precision for r in PRESETS["w8a8"]]


def test_int4_per_channel_has_no_block_and_keeps_it_through_rules_for() -> None:
    rule = PrecisionRule(match=RuleMatch(role="mlp"), precision="int4", granularity="per_channel", activations="static")
    assert rule.granularity == "per_channel" and rule.block_size is None
    ordered = rules_for("w4a8", (rule,), int4_block_size=64)
    assert ordered[0][1].block_size is None  # the recipe's block size is for per-block rules only
    assert {r.block_size for _, r in ordered[1:] if r.precision == "int4"} == {64}
    with pytest.raises(ValidationError, match="block_size is for granularity per_block"):
        PrecisionRule(precision="int4", granularity="per_channel", block_size=32)


def test_activations_is_refused_on_int8() -> None:
    with pytest.raises(ValidationError, match="activations .* is for precision int4"):
        PrecisionRule(precision="int8", activations="static")


def test_recipe_int4_granularity_per_channel_reaches_the_presets_int4_rules() -> None:
    ordered = rules_for("w4a8-awq", (), int4_block_size=32, int4_granularity="per_channel")
    int4 = [r for _, r in ordered if r.precision == "int4"]
    assert int4 and all(r.granularity == "per_channel" and r.block_size is None and r.activations == "static" for r in int4)


def test_an_int4_rule_without_granularity_stays_per_block() -> None:
    assert PrecisionRule(precision="int4").granularity == "per_block"
    assert PrecisionRule(precision="int4", granularity="per_tensor").granularity == "per_block"
