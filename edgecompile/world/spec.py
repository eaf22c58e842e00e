"""Scene specifications: every random choice of a scene, as plain frozen values.

A spec is drawn from a seeded RNG and then rendered, so its canonical hash identifies the
exact pixels; the split guard in `generator.py` uses that hash to keep splits disjoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from edgecompile.world.vocabulary import BACKGROUNDS, COLOURS, POSITIONS, SHAPES

# Horizontal slot centres as a fraction of the image width.
SLOT_CENTRES: dict[str, float] = {"left": 0.22, "center": 0.5, "right": 0.78}
COUNT_PROBABILITIES: tuple[float, float, float] = (0.6, 0.2, 0.2)
# Shapes keep their canonical orientation up to this jitter (degrees). Full rotations make
# a square a diamond and a triangle point anywhere, which a tiny ViT trained for minutes on
# a CPU cannot learn to ignore; a jitter keeps some pose variation.
ROTATION_JITTER = 20.0


@dataclass(frozen=True)
class BackgroundSpec:
    """A muted background: kind of texture, tint, brightness range and texture seed."""

    kind: str
    hue: float
    saturation: float
    value_low: float
    value_high: float
    angle: float
    frequency: float
    grain: float
    noise_seed: int


@dataclass(frozen=True)
class ShapeSpec:
    """One shape, in pixel units of the final image."""

    shape: str
    colour: str
    position: str
    cx: float
    cy: float
    radius: float
    rotation: float
    hue: float
    saturation: float
    value: float


@dataclass(frozen=True)
class SceneSpec:
    """Everything that determines a scene's pixels."""

    size: int
    background: BackgroundSpec
    shapes: tuple[ShapeSpec, ...]

    def canonical_hash(self) -> str:
        """Return sha256 of the spec's canonical JSON (floats rounded to 1e-6)."""
        data = _round_floats(asdict(self))
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _round_floats(value: object) -> object:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round_floats(v) for v in value]
    return value


def draw_background(rng: np.random.Generator) -> BackgroundSpec:
    """Draw a muted background so that shape colours stay identifiable on it."""
    low = float(rng.uniform(0.25, 0.45))
    return BackgroundSpec(
        kind=str(rng.choice(BACKGROUNDS)),
        hue=float(rng.uniform(0, 360)),
        saturation=float(rng.uniform(0.0, 0.25)),
        value_low=low,
        value_high=float(min(low + rng.uniform(0.1, 0.3), 0.75)),
        angle=float(rng.uniform(0, 180)),
        frequency=float(rng.uniform(2, 7)),
        grain=float(rng.uniform(0, 8)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def draw_scene(rng: np.random.Generator, size: int) -> SceneSpec:
    """Draw one scene: one to three shapes of a single colour-shape class in distinct slots."""
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    count = int(rng.choice([1, 2, 3], p=COUNT_PROBABILITIES))
    slots = sorted(rng.choice(len(POSITIONS), size=count, replace=False).tolist())
    base_hue, jitter = COLOURS[colour]
    # Multi-shape scenes use smaller shapes and less jitter so neighbours do not overlap.
    radius_range = (0.12, 0.18) if count == 1 else (0.08, 0.11)
    x_jitter = 0.04 if count == 1 else 0.02
    shapes = []
    for slot in slots:
        position = POSITIONS[slot]
        shapes.append(ShapeSpec(
            shape=shape,
            colour=colour,
            position=position,
            cx=float((SLOT_CENTRES[position] + rng.uniform(-x_jitter, x_jitter)) * size),
            cy=float((0.5 + rng.uniform(-0.2, 0.2)) * size),
            radius=float(rng.uniform(*radius_range) * size),
            rotation=float(rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)),
            hue=float(base_hue + rng.uniform(-jitter, jitter)),
            saturation=float(rng.uniform(0.75, 1.0)),
            value=float(rng.uniform(0.8, 1.0)),
        ))
    return SceneSpec(size=size, background=draw_background(rng), shapes=tuple(shapes))
