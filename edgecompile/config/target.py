"""Targets: the facts of a device (tier, budgets, backend, native precisions).

Budgets default to the tier's (seed 002's EdgeVLM-Bench tiers) and may be overridden per target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgecompile.config.loader import load_document

Tier = Literal["embedded", "mobile", "edge_server"]
Precision = Literal["fp32", "fp16", "int8", "int4"]

TIER_BUDGETS: dict[str, tuple[int, float]] = {
    # tier: (memory budget MB, latency budget ms) per EdgeVLM-Bench (seed 002)
    "embedded": (4096, 150.0),
    "mobile": (8192, 80.0),
    "edge_server": (16384, 30.0),
}

# Generative VLMs are judged on time to first token (vision encoder + prefill of the prompt) and on
# decode rate, not on one forward pass. Seed 002 sets no such budgets; these defaults are ours:
# TTFT ten times the tier's single-inference budget, and a decode rate at or above reading speed.
TIER_GENERATIVE_BUDGETS: dict[str, tuple[float, float]] = {
    # tier: (time to first token ms, minimum decode tokens/s)
    "embedded": (1500.0, 5.0),
    "mobile": (800.0, 10.0),
    "edge_server": (300.0, 20.0),
}


class Strict(BaseModel):
    """Base for every document model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(Strict):
    """One device (or device class) that a recipe compiles for."""

    schema_version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    tier: Tier
    backend: str
    arch: Literal["x86_64", "aarch64", "any"] = "any"
    native_precisions: tuple[Precision, ...] = ("fp32", "int8")
    memory_budget_mb: int | None = Field(default=None, gt=0)
    latency_budget_ms: float | None = Field(default=None, gt=0)
    ttft_budget_ms: float | None = Field(default=None, gt=0)  # generative models: time to first token
    min_decode_tokens_per_s: float | None = Field(default=None, gt=0)  # generative models: decode rate
    backend_options: dict[str, Any] = Field(default_factory=dict)
    examples: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _fill_budgets(self) -> Target:
        memory, latency = TIER_BUDGETS[self.tier]
        if self.memory_budget_mb is None:
            object.__setattr__(self, "memory_budget_mb", memory)
        if self.latency_budget_ms is None:
            object.__setattr__(self, "latency_budget_ms", latency)
        ttft, rate = TIER_GENERATIVE_BUDGETS[self.tier]
        if self.ttft_budget_ms is None:
            object.__setattr__(self, "ttft_budget_ms", ttft)
        if self.min_decode_tokens_per_s is None:
            object.__setattr__(self, "min_decode_tokens_per_s", rate)
        return self

    def executes(self, precision: str) -> bool:
        """Whether the hardware runs ``precision`` natively (else the backend must upcast)."""
        return precision in self.native_precisions


def load_target(path: Path) -> Target:
    """Load and validate one target YAML file."""
    target = load_document(path, Target)
    if target.name != path.stem:
        from edgecompile.config.loader import error_at

        raise error_at(path, ("name",), f"expected '{path.stem}' (the file name), got '{target.name}'")
    return target
