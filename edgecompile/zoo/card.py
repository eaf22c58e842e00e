"""The accuracy card each bundled model ships with (`edgecompile_card.json`).

Why: the numbers a model was measured at travel with its weights, so the zoo table and
the validation gates can compare against them without re-running the evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CARD_FILE = "edgecompile_card.json"


class ModelCard(BaseModel):
    """Measured facts about one trained bundled model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str = Field(pattern="^(dual_encoder|generative)$")
    task: str
    metric: str
    eval_accuracy: float = Field(ge=0.0, le=1.0)
    eval_count: int = Field(gt=0)
    eval_split: str
    train_seconds: float = Field(ge=0.0)
    train_threads: int = Field(gt=0)
    train_steps: int = Field(gt=0)
    train_cpu_seconds: float = Field(ge=0.0)
    seed: int
    parameters: int = Field(gt=0)
    train_command: str


def write_card(model_dir: Path, card: ModelCard) -> Path:
    """Write the card next to the weights and return its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(json.dumps(card.model_dump(), indent=2) + "\n")
    return path


def read_card(model_dir: Path) -> ModelCard:
    """Read and validate a model's card, naming the file on any error."""
    path = Path(model_dir) / CARD_FILE
    try:
        return ModelCard.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing accuracy card") from None
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid accuracy card: {exc}") from None
