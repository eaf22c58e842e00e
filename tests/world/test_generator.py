"""The world is deterministic, its splits are disjoint, and its supervision is consistent."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgecompile.world import CLASS_NAMES, SPLITS, apply_variant, generate, split_of_hash
from edgecompile.world.vocabulary import COLOURS, COUNT_WORDS, POSITIONS, SHAPES


def _digest(scenes) -> str:
    h = hashlib.sha256()
    for s in scenes:
        h.update(s.image.tobytes())
        h.update(repr((s.label, s.caption, s.qa)).encode())
    return h.hexdigest()


def test_same_bytes_twice():
    assert _digest(generate("train", 40, seed=3)) == _digest(generate("train", 40, seed=3))


def test_seed_changes_scenes():
    assert _digest(generate("train", 10, seed=0)) != _digest(generate("train", 10, seed=1))


def test_prefix_stable_and_start_offset():
    ten = generate("eval", 10)
    assert _digest(generate("eval", 4)) == _digest(ten[:4])
    assert _digest(generate("eval", 3, start=7)) == _digest(ten[7:])


def test_splits_do_not_overlap():
    hashes = {split: {s.scene_hash for s in generate(split, 150)} for split in SPLITS}
    for split, found in hashes.items():
        assert len(found) == 150
        assert all(split_of_hash(h) == split for h in found)
    assert not hashes["train"] & hashes["eval"]
    assert not hashes["train"] & hashes["calibration"]
    assert not hashes["eval"] & hashes["calibration"]
    pixels = {split: {hashlib.sha256(s.image.tobytes()).hexdigest() for s in generate(split, 150)}
              for split in SPLITS}
    assert not pixels["train"] & pixels["eval"]


def test_vocabulary_size():
    assert len(CLASS_NAMES) >= 10 and len(SHAPES) >= 4 and len(COLOURS) >= 4


def test_supervision_matches_attributes():
    for s in generate("train", 200):
        assert s.image.size == (96, 96) and s.image.mode == "RGB"
        assert s.label == f"{s.colour} {s.shape}" and s.label in CLASS_NAMES
        answers = dict(s.qa)
        assert answers["what colour is the shape?"] == s.colour
        assert answers["what shape is it?"] == s.shape
        assert answers["how many shapes are there?"] == COUNT_WORDS[s.count - 1]
        assert len(s.positions) == s.count and set(s.positions) <= set(POSITIONS)
        if s.count == 1:
            assert answers["where is the shape?"] == s.positions[0]
            assert s.positions[0] in s.caption
        assert all(1 <= len(a.split()) <= 2 for a in answers.values())


def test_class_and_count_coverage():
    scenes = generate("eval", 400)
    assert {s.label for s in scenes} == set(CLASS_NAMES)
    assert {s.count for s in scenes} == {1, 2, 3}


def test_shape_colour_is_visible():
    """The shape's pixels are far more saturated than the muted background."""
    for s in generate("calibration", 30):
        hsv = np.asarray(s.image.convert("HSV"), dtype=np.float32)
        first = s.spec.shapes[0]
        cx, cy = int(first.cx), int(first.cy)
        assert hsv[cy, cx, 1] > 150  # shape centre: saturated
        assert np.median(hsv[..., 1]) < 100  # most pixels: muted background


def test_size_is_configurable():
    assert generate("train", 1, size=64)[0].image.size == (64, 64)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split"):
        generate("test", 1)
    with pytest.raises(ValueError, match="count"):
        generate("train", -1)


def test_variants():
    image = generate("calibration", 1)[0].image
    src = np.asarray(image, dtype=np.float32)
    dark = np.asarray(apply_variant(image, "dark"), dtype=np.float32)
    assert dark.mean() < 0.35 * src.mean() + 1
    gray = np.asarray(apply_variant(image, "gray"))
    assert gray.shape == (96, 96, 3) and (gray[..., 0] == gray[..., 1]).all()
    a = np.asarray(apply_variant(image, "noise", noise_seed=1))
    b = np.asarray(apply_variant(image, "noise", noise_seed=1))
    assert (a == b).all() and a.std() > 60
    with pytest.raises(ValueError, match="unknown image variant"):
        apply_variant(image, "blurry")
