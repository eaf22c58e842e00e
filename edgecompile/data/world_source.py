"""Calibration samples drawn from the world's `calibration` split.

Why streaming: calibration may pass thousands of samples through a model; scenes are
rendered one at a time as the iterator is consumed. `balanced` sets take classes in strict
rotation, so any prefix of the stream is (as nearly as possible) class-balanced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from edgecompile.data.definitions import WorldSetDefinition
from edgecompile.data.samples import Sample
from edgecompile.world import CLASS_NAMES, apply_variant
from edgecompile.world.generator import Scene, describe, draw_spec, make_scene

_MODALITY_CYCLE = ("image+text", "image", "text")  # what "mixed" rotates through


def _scenes(defn: WorldSetDefinition, count: int) -> Iterator[Scene]:
    if not defn.balanced:
        for i in range(count):
            yield make_scene(*draw_spec("calibration", i, seed=defn.seed, size=defn.image_size))
        return
    waiting: dict[str, deque] = {c: deque() for c in CLASS_NAMES}
    index = 0
    for j in range(count):
        wanted = CLASS_NAMES[j % len(CLASS_NAMES)]
        while not waiting[wanted]:
            spec, scene_hash = draw_spec("calibration", index, seed=defn.seed, size=defn.image_size)
            index += 1
            waiting[describe(spec)[0]].append((spec, scene_hash))
        yield make_scene(*waiting[wanted].popleft())


def world_samples(defn: WorldSetDefinition, limit: int | None) -> Iterator[Sample]:
    """Yield up to `limit` (default: `count`) samples of a world calibration set."""
    count = defn.count if limit is None else min(limit, defn.count)
    for j, scene in enumerate(_scenes(defn, count)):
        modality = defn.modality
        if modality == "mixed":
            modality = _MODALITY_CYCLE[j % len(_MODALITY_CYCLE)]
        question, answer = scene.qa[j % len(scene.qa)]
        image = None
        if modality != "text":
            image = apply_variant(scene.image, defn.variant,
                                  noise_seed=int(scene.scene_hash[:8], 16))
        label = None if defn.variant == "noise" and image is not None else scene.label
        yield Sample(
            image=image,
            text=scene.caption if modality != "image" else None,
            label=label,
            question=question if modality != "image" else None,
            answer=answer if modality != "image" else None,
        )
