"""Pydantic models of user eval-set YAML files in `eval_sets/` (schema_version 1).

Four kinds, one per task a user can measure on their own data:

- `classification`: an ImageFolder tree (`path`: one folder per class) or a labels file
  (`labels`: CSV with a `file,label` header, or JSONL of `{"file", "label"}`); zero-shot
  prompts from `templates`, averaged per class; metrics `accuracy` and `accuracy.top5`;
- `retrieval`: a JSONL of `{"image", "caption"}` pairs; recall@1/5/10 in both directions;
- `vqa`: a JSONL of `{"image", "question", "answers": [...]}`; metric `accuracy`;
- `captioning`: a JSONL of `{"image", "prompt", "reference"}`; metric `caption.token_f1`.

Paths are relative to the YAML file; paths inside a labels or JSONL file are relative to that file.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

KINDS = ("classification", "retrieval", "vqa", "captioning")
FAMILY_OF_KIND = {"classification": "dual_encoder", "retrieval": "dual_encoder", "vqa": "generative", "captioning": "generative"}


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_version: Literal[1]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(min_length=1)


class ClassificationSetDefinition(_Base):
    """Zero-shot classification over the user's classes."""

    type: Literal["classification"]
    path: str | None = Field(default=None, min_length=1)  # ImageFolder root: <path>/<class>/<image>
    labels: str | None = Field(default=None, min_length=1)  # CSV (file,label) or JSONL ({"file", "label"})
    # The classes, in order (default: the folder names, or the labels file's labels, sorted).
    classes: list[str] | None = Field(default=None, min_length=2)
    # What the templates say for a class (default: its name with '_' read as a space).
    class_text: dict[str, str] = Field(default_factory=dict)
    templates: list[str] = Field(default_factory=lambda: ["a photo of a {}."], min_length=1)

    @field_validator("templates")
    @classmethod
    def _one_slot(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if t.count("{}") != 1]
        if bad:
            raise ValueError(f"each template needs exactly one '{{}}' where the class goes; got {bad[0]!r}")
        return value

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a class is named twice")
        return value

    # Exactly one of path / labels, and class_text naming only classes: checked by the loader, which knows the lines.


class RetrievalSetDefinition(_Base):
    """Image-text retrieval over caption pairs (an image may have several captions)."""

    type: Literal["retrieval"]
    captions: str = Field(min_length=1)  # JSONL of {"image", "caption"}


class VqaSetDefinition(_Base):
    """Question answering: exact match, after VQA answer normalisation, against any answer."""

    type: Literal["vqa"]
    questions: str = Field(min_length=1)  # JSONL of {"image", "question", "answers": [...]}


class CaptioningSetDefinition(_Base):
    """Captioning (or any prompted description) scored by token F1 against a reference."""

    type: Literal["captioning"]
    references: str = Field(min_length=1)  # JSONL of {"image", "prompt", "reference"}


EvalSetDefinition = Annotated[
    Union[ClassificationSetDefinition, RetrievalSetDefinition, VqaSetDefinition, CaptioningSetDefinition],
    Field(discriminator="type"),
]


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LabelLine(_Line):
    file: str = Field(min_length=1)
    label: str = Field(min_length=1)


class PairLine(_Line):
    image: str = Field(min_length=1)
    caption: str = Field(min_length=1)


class QuestionLine(_Line):
    image: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answers: list[str] = Field(min_length=1)


class ReferenceLine(_Line):
    image: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    reference: str = Field(min_length=1)
