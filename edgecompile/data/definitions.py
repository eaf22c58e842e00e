"""Pydantic models of calibration-set YAML files (schema_version 1).

Two types: `world` draws from the bundled world's calibration split (optionally darkened,
grayed, pure noise, class-balanced, or restricted to one modality); `folder` reads a user's
directory of images with optional captions.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Modality = Literal["image", "text", "image+text", "mixed"]
Variant = Literal["clean", "dark", "gray", "noise"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: Literal[1]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(min_length=1)


class WorldSetDefinition(_Base):
    """Samples from the world's `calibration` split (disjoint from train and eval)."""

    type: Literal["world"]
    modality: Modality = "image+text"
    variant: Variant = "clean"
    count: int = Field(gt=0, le=100_000)
    seed: int = Field(default=0, ge=0)
    balanced: bool = False
    image_size: int = Field(default=96, ge=32, le=1024)


class FolderSetDefinition(_Base):
    """A directory of images (`path`, relative to the YAML file) plus optional captions."""

    type: Literal["folder"]
    path: str = Field(min_length=1)
    captions: str | None = "captions.jsonl"
    modality: Literal["image", "image+text"] = "image+text"
    count: int | None = Field(default=None, gt=0)


CalibrationSetDefinition = Annotated[
    Union[WorldSetDefinition, FolderSetDefinition], Field(discriminator="type"),
]
