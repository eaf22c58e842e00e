"""Named, disjoint, reproducible splits of the shapes world.

Why two mechanisms: each split draws from its own seed stream (seed, split, index), and
each accepted scene's canonical hash must fall in the split's residue class (hash mod 3).
The second makes splits disjoint by construction, even if two seed streams collided.
Every scene has its own RNG, so `generate(split, 100)` is a prefix of `generate(split, 1000)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgecompile.world.render import render_scene
from edgecompile.world.spec import SceneSpec, draw_scene
from edgecompile.world.vocabulary import COUNT_WORDS, PLURALS, QUESTIONS

SPLITS: tuple[str, ...] = ("train", "eval", "calibration")
_MAX_TRIES = 1000


@dataclass(frozen=True)
class Scene:
    """One rendered scene with its supervision: class label, caption and QA pairs."""

    image: Image.Image
    label: str
    caption: str
    qa: tuple[tuple[str, str], ...]
    colour: str
    shape: str
    count: int
    positions: tuple[str, ...]
    scene_hash: str
    spec: SceneSpec


def split_of_hash(scene_hash: str) -> str:
    """Return the only split a scene with this canonical hash may belong to."""
    return SPLITS[int(scene_hash[:8], 16) % len(SPLITS)]


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def draw_spec(split: str, index: int, *, seed: int = 0, size: int = 96) -> tuple[SceneSpec, str]:
    """Draw the spec of scene `index` of a split and return it with its canonical hash."""
    split_id = _check_split(split)
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, index]))
    for _ in range(_MAX_TRIES):
        spec = draw_scene(rng, size)
        scene_hash = spec.canonical_hash()
        if split_of_hash(scene_hash) == split:
            return spec, scene_hash
    raise RuntimeError(f"no {split} scene accepted after {_MAX_TRIES} draws")  # p ~ (2/3)^1000


def describe(spec: SceneSpec) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """Return (label, caption, qa pairs) for a spec."""
    first = spec.shapes[0]
    count = len(spec.shapes)
    label = f"{first.colour} {first.shape}"
    if count == 1:
        where = "in the center" if first.position == "center" else f"on the {first.position}"
        caption = f"a {label} {where}"
    else:
        caption = f"{COUNT_WORDS[count - 1]} {first.colour} {PLURALS[first.shape]}"
    qa = [
        (QUESTIONS["colour"], first.colour),
        (QUESTIONS["shape"], first.shape),
        (QUESTIONS["count"], COUNT_WORDS[count - 1]),
    ]
    if count == 1:
        qa.insert(2, (QUESTIONS["position"], first.position))
    return label, caption, tuple(qa)


def make_scene(spec: SceneSpec, scene_hash: str) -> Scene:
    """Render a spec and attach its supervision."""
    label, caption, qa = describe(spec)
    first = spec.shapes[0]
    return Scene(
        image=render_scene(spec),
        label=label,
        caption=caption,
        qa=qa,
        colour=first.colour,
        shape=first.shape,
        count=len(spec.shapes),
        positions=tuple(s.position for s in spec.shapes),
        scene_hash=scene_hash,
        spec=spec,
    )


def generate(split: str, count: int, *, seed: int = 0, size: int = 96, start: int = 0) -> list[Scene]:
    """Generate scenes `start .. start+count-1` of a split, identically on every machine."""
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got count={count}, start={start}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    return [make_scene(*draw_spec(split, i, seed=seed, size=size)) for i in range(start, start + count)]
