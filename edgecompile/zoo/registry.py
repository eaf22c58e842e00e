"""The bundled model zoo: trained models that ship inside the package.

Why: accuracy gates only mean something on a model that actually solves a task, and no
weights can be downloaded on build machines. Each model directory is a normal Hugging Face
directory (`from_pretrained` works on it) plus an `edgecompile_card.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecompile.zoo.card import ModelCard, read_card

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_DUAL_ENCODER = "shapes-clip"
DEFAULT_GENERATIVE = "shapes-llava"

# name -> kind; the order is the order of the zoo table.
_BUNDLED: dict[str, str] = {
    DEFAULT_DUAL_ENCODER: "dual_encoder",
    DEFAULT_GENERATIVE: "generative",
    "shapes-clip-l": "dual_encoder",  # ViT 6x192: large enough for INT4 weights to cost accuracy (seed 002)
    "shapes-llava-next": "generative",  # LLaVA-NeXT anyres 2x2, 192 image tokens, 8-layer GQA decoder (issues 17, 22)
}


@dataclass(frozen=True)
class ZooModel:
    """One bundled model: its name, kind, directory and measured accuracy card."""

    name: str
    kind: str
    path: Path
    card: ModelCard


def model_path(name: str) -> Path:
    """Return the directory of a bundled model, or raise KeyError naming the known ones."""
    if name not in _BUNDLED:
        raise KeyError(f"no bundled model {name!r}: expected one of {', '.join(_BUNDLED)}")
    path = MODELS_DIR / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: bundled model {name!r} is missing its config.json")
    return path


def list_models() -> list[ZooModel]:
    """Return every bundled model present in this installation, with its card."""
    models = []
    for name, kind in _BUNDLED.items():
        path = MODELS_DIR / name
        if (path / "config.json").is_file():
            models.append(ZooModel(name=name, kind=kind, path=path, card=read_card(path)))
    return models
