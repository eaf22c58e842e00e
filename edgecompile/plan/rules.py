"""Precision rules: an ordered list, first match wins, each saying why it exists.

A rule matches on component, role, op type and name (node name or module path), each either an
exact string or ``re:<pattern>``. ``precision: null`` means "leave in float". Recipes prepend their
rules to a preset's, so a recipe overrides a preset by saying less, not by copying it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgecompile.plan.roles import ROLES, NodeInfo

Precision = Literal["fp32", "fp16", "int8", "int4"]
Granularity = Literal["per_tensor", "per_channel", "per_block"]


def _matches(pattern: str | None, value: str) -> bool:
    if pattern is None:
        return True
    if pattern.startswith("re:"):
        return re.search(pattern[3:], value) is not None
    return pattern == value


class RuleMatch(BaseModel):
    """Which nodes a rule applies to; every given field must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    component: str | None = None
    role: str | None = None
    op_type: str | None = None
    name: str | None = None

    @field_validator("component", "role", "op_type", "name")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("re:"):
            try:
                re.compile(value[3:])
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("re:") and value not in ROLES:
            raise ValueError(f"expected one of {', '.join(ROLES)} or 're:<pattern>'")
        return value

    def matches(self, component: str, node: NodeInfo) -> bool:
        return (
            _matches(self.component, component)
            and _matches(self.role, node.role)
            and _matches(self.op_type, node.op_type)
            and (_matches(self.name, node.name) or (self.name is not None and _matches(self.name, node.module)))
        )


class PrecisionRule(BaseModel):
    """Map matching nodes to a precision (``None``: leave in float)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: RuleMatch = RuleMatch()
    precision: Precision | None = Field(...)
    granularity: Granularity = "per_channel"
    block_size: int | None = Field(default=None, ge=16, le=256)
    symmetric: bool = True
    # INT4 activations: dynamic (MatMulNBits' run-time INT8, uncalibrated) or static (calibrated INT8 Q/DQ).
    activations: Literal["dynamic", "static"] = "dynamic"
    why: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> PrecisionRule:
        if self.precision == "int4" and (self.granularity == "per_tensor" or "granularity" not in self.model_fields_set):
            object.__setattr__(self, "granularity", "per_block")  # INT4 is per block unless a rule says per_channel
        if self.precision == "int4" and self.granularity == "per_channel" and self.block_size is not None:
            raise ValueError("block_size is for granularity per_block; INT4 per_channel has one scale per output channel")
        if "activations" in self.model_fields_set and self.precision != "int4":
            raise ValueError("activations (dynamic | static) is for precision int4 (INT8 activations are always calibrated)")
        if self.granularity == "per_block" and self.precision != "int4":
            raise ValueError("granularity per_block is for precision int4 (INT8 takes per_tensor or per_channel)")
        if self.match.role == "kv_cache" and self.precision not in (None, "fp32", "int8"):
            raise ValueError("role kv_cache takes precision int8 (GroupQueryAttention's INT8 cache, per_channel or per_tensor scales) or fp32")
        if self.block_size is not None and self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two (16, 32, 64, 128, 256)")
        return self

    def describe(self) -> str:
        m = self.match
        parts = [f"{k}={v}" for k, v in (("component", m.component), ("role", m.role), ("op", m.op_type), ("name", m.name)) if v]
        return " & ".join(parts) or "*"


_ENCODER_LINEARS = "re:^(attn_qkv|attn_out|mlp|other)$"
_DECODER = "re:^decoder"


def _rule(precision: str | None, why: str, activations: str = "dynamic", **match: str) -> PrecisionRule:
    extra = {"granularity": "per_block", "block_size": 32, "activations": activations} if precision == "int4" else {}
    return PrecisionRule(match=RuleMatch(**match), precision=precision, why=why, **extra)


_FLOAT_SENSITIVE = (
    _rule(None, "softmax stays float: its outputs span decades that INT8 cannot hold", role="softmax"),
    _rule(None, "layer norms stay float: statistics over the hidden size are outlier-dominated", role="layernorm"),
    _rule(None, "residual adds stay float: quantized residual adds are a known cause of ViT INT8 collapse", role="residual_add"),
    _rule(None, "attention score matmuls stay float: both operands are activations", role="attn_matmul"),
    _rule(None, "embedding lookups stay float: gathers gain nothing from INT8", role="embeddings"),
)

# What every VLM preset keeps out of integer precision, in this order.
_VLM_FLOAT = (
    _rule("fp16", "VLM plan: the patch embedding sees raw pixels and is tiny; FP16", role="patch_embed"),
    _rule("fp16", "VLM plan: the projector maps between modalities; FP16", role="projector"),
    *_FLOAT_SENSITIVE,
)

PRESETS: dict[str, tuple[PrecisionRule, ...]] = {
    "fp32": (_rule("fp32", "preset fp32: the float reference"),),
    "fp16": (*_FLOAT_SENSITIVE[:2], _rule("fp16", "preset fp16: everything in half precision"),),
    "w8a8": (
        *_VLM_FLOAT,
        _rule("int8", "preset w8a8: W8A8 for every linear layer", role=_ENCODER_LINEARS),
        _rule("int8", "preset w8a8: W8A8 for lm_head", role="lm_head"),
        _rule(None, "default: leave in float"),
    ),
    "w8a8-sq": (
        *_VLM_FLOAT,
        _rule("int8", "preset w8a8-sq: W8A8 for every linear layer after SmoothQuant (alpha searched per layer)", role=_ENCODER_LINEARS),
        _rule("int8", "preset w8a8-sq: W8A8 for lm_head", role="lm_head"),
        _rule(None, "default: leave in float"),
    ),
    "w4a8": (
        *_VLM_FLOAT,
        _rule("int4", "preset w4a8: INT4 block-wise weights for every linear, ViT included, with static calibrated INT8 activations (seed 002's W4A8)", activations="static", role=_ENCODER_LINEARS),
        _rule("int4", "preset w4a8: INT4 lm_head, static INT8 activations", activations="static", role="lm_head"),
        _rule(None, "default: leave in float"),
    ),
    "w4a8-awq": (
        *_VLM_FLOAT,
        _rule("int4", "preset w4a8-awq: AWQ-scaled INT4 block-wise weights (alpha searched per layer group, clip searched), static INT8 activations", activations="static", role=_ENCODER_LINEARS),
        _rule("int4", "preset w4a8-awq: INT4 lm_head, static INT8 activations", activations="static", role="lm_head"),
        _rule(None, "default: leave in float"),
    ),
    "w4a8-dyn": (
        *_VLM_FLOAT,
        _rule("int4", "preset w4a8-dyn: INT4 block-wise weights for every linear; activations quantized to INT8 per block at run time (MatMulNBits, never calibrated)", role=_ENCODER_LINEARS),
        _rule("int4", "preset w4a8-dyn: INT4 lm_head", role="lm_head"),
        _rule(None, "default: leave in float"),
    ),
    "vlm-default": (
        _rule("int4", "VLM plan: the decoder's token-embedding table in INT4 blocks (over half an INT4 decoder's bytes, one row read per token); float where the backend has no quantized gather", component="embed_tokens", role="embeddings"),
        *_VLM_FLOAT,
        _rule("int4", "VLM plan: INT4 block-wise weight-only decoder linears (memory-bound decode)", component=_DECODER, role=_ENCODER_LINEARS),
        _rule("int8", "VLM plan: W8A8 for the lm_head (recipe may choose fp16)", component=_DECODER, role="lm_head"),
        _rule("int8", "VLM plan: W8A8 (per-channel symmetric weights) for ViT and text-encoder linears", role=_ENCODER_LINEARS),
        _rule(None, "default: leave in float"),
    ),
}


# Weight transforms a preset implies (run before the recipe's own quantization.weight_transforms).
PRESET_TRANSFORMS: dict[str, tuple[str, ...]] = {"w8a8-sq": ("smoothquant",), "w4a8-awq": ("awq",)}


def _with_block(rule: PrecisionRule, block_size: int, *, keep: bool, granularity: str = "per_block") -> PrecisionRule:
    """INT4 rules take the recipe's block size unless (recipe rules only) they name their own;
    the presets' INT4 rules also take the recipe's INT4 granularity (per block or per channel)."""
    if rule.precision == "int4" and not keep and granularity == "per_channel":
        return rule.model_copy(update={"granularity": "per_channel", "block_size": None})
    if rule.precision != "int4" or rule.granularity != "per_block" or (keep and rule.block_size is not None):
        return rule
    return rule.model_copy(update={"block_size": block_size})


def rules_for(preset: str, recipe_rules: tuple[PrecisionRule, ...], int4_block_size: int = 32, int4_granularity: str = "per_block") -> tuple[tuple[str, PrecisionRule], ...]:
    """The ordered rule list: the recipe's rules first, then the preset's; each with its origin.

    The preset's INT4 rules take the recipe's ``quantization.int4_block_size`` and ``int4_granularity``.
    """
    ordered = [(f"recipe.rules[{i}]", _with_block(rule, int4_block_size, keep=True)) for i, rule in enumerate(recipe_rules)]
    ordered += [(f"preset:{preset}[{i}]", _with_block(rule, int4_block_size, keep=False, granularity=int4_granularity)) for i, rule in enumerate(PRESETS[preset])]
    return tuple(ordered)
