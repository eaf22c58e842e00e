"""Calibration-set definitions resolve, stream deterministically, and reject bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompile.data import DataError
from edgecompile.data.calibration_sets import load_calibration_set
from edgecompile.world import CLASS_NAMES

REPO = Path(__file__).resolve().parents[2]
SETS = REPO / "calibration_sets"
BUNDLED = ["balanced", "dark", "gray", "noise", "text-only", "image-only", "mixed"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sets_resolve_and_stream(name):
    cal = load_calibration_set(name, SETS)
    assert cal.name == name
    samples = list(cal.samples(limit=6))
    assert len(samples) == 6
    again = list(load_calibration_set(str(SETS / f"{name}.yaml"), SETS).samples(limit=6))
    for a, b in zip(samples, again):
        assert a.text == b.text
        assert (a.image is None) == (b.image is None)
        if a.image is not None:
            assert a.image.tobytes() == b.image.tobytes()
    assert len(cal.fingerprint()) == 64


def test_modalities_and_variants():
    text_only = list(load_calibration_set("text-only", SETS).samples(limit=4))
    assert all(s.image is None and s.text for s in text_only)
    image_only = list(load_calibration_set("image-only", SETS).samples(limit=4))
    assert all(s.image is not None and s.text is None for s in image_only)
    mixed = list(load_calibration_set("mixed", SETS).samples(limit=6))
    assert [(s.image is not None, s.text is not None) for s in mixed[:3]] == [
        (True, True), (True, False), (False, True)]
    dark = next(load_calibration_set("dark", SETS).samples(limit=1)).image
    assert np.asarray(dark).mean() < 60
    gray = np.asarray(next(load_calibration_set("gray", SETS).samples(limit=1)).image)
    assert (gray[..., 0] == gray[..., 2]).all()
    noise = next(load_calibration_set("noise", SETS).samples(limit=1))
    assert noise.label is None and np.asarray(noise.image).std() > 60


def test_balanced_covers_classes_equally():
    labels = [s.label for s in load_calibration_set("balanced", SETS).samples(limit=32)]
    assert all(labels.count(c) == 2 for c in CLASS_NAMES)


def test_samples_is_a_lazy_iterator():
    it = load_calibration_set("balanced", SETS).samples()
    assert iter(it) is it


def test_fingerprints_differ_between_sets():
    prints = {load_calibration_set(n, SETS).fingerprint() for n in BUNDLED}
    assert len(prints) == len(BUNDLED)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


WORLD_YAML = """schema_version: 1
name: {name}
description: test set
type: world
count: 4
"""


def test_unknown_key_names_file_line_and_field(tmp_path):
    path = _write(tmp_path / "bad.yaml", WORLD_YAML.format(name="bad") + "colour: red\n")
    with pytest.raises(DataError, match=r"bad\.yaml:6: colour: unknown field"):
        load_calibration_set(str(path), tmp_path)


def test_wrong_type_and_value(tmp_path):
    path = _write(tmp_path / "bad.yaml",
                  WORLD_YAML.format(name="bad").replace("count: 4", "count: many"))
    with pytest.raises(DataError, match=r"bad\.yaml:5: count:"):
        load_calibration_set(str(path), tmp_path)
    _write(path, WORLD_YAML.format(name="bad") + "variant: blurry\n")
    with pytest.raises(DataError, match=r"variant: .*'clean'"):
        load_calibration_set(str(path), tmp_path)
    _write(path, WORLD_YAML.format(name="bad").replace("type: world", "type: s3"))
    with pytest.raises(DataError, match="type"):
        load_calibration_set(str(path), tmp_path)


def test_name_must_match_file_and_unknown_name(tmp_path):
    path = _write(tmp_path / "one.yaml", WORLD_YAML.format(name="two"))
    with pytest.raises(DataError, match="name: expected 'one'"):
        load_calibration_set(str(path), tmp_path)
    with pytest.raises(DataError, match="unknown calibration set 'nope'.*known sets: one"):
        load_calibration_set("nope", tmp_path)


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path / "x.yaml", "schema_version: [1\n")
    with pytest.raises(DataError, match=r"x\.yaml.*invalid YAML"):
        load_calibration_set(str(path), tmp_path)


def _folder_set(tmp_path: Path, extra: str = "") -> Path:
    return _write(tmp_path / "mine.yaml", "schema_version: 1\nname: mine\n"
                  "description: my photos\ntype: folder\npath: photos\n" + extra)


def _images(folder: Path, n: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(n):
        Image.new("RGB", (20, 16), (i * 40, 10, 200)).save(folder / f"img{i}.png")


def test_folder_set_with_captions(tmp_path):
    _images(tmp_path / "photos", 3)
    (tmp_path / "photos" / "captions.jsonl").write_text(
        json.dumps({"file": "img1.png", "caption": "a blue thing"}) + "\n")
    cal = load_calibration_set(str(_folder_set(tmp_path)), tmp_path)
    samples = list(cal.samples())
    assert len(samples) == 3 and [s.text for s in samples] == [None, "a blue thing", None]
    assert samples[2].image.size == (20, 16)
    before = cal.fingerprint()
    Image.new("RGB", (20, 16), (1, 2, 3)).save(tmp_path / "photos" / "img0.png")
    assert load_calibration_set("mine", tmp_path).fingerprint() != before


def test_folder_empty(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError, match=r"mine\.yaml: path: folder .*photos holds no images"):
        load_calibration_set(str(_folder_set(tmp_path)), tmp_path)


def test_folder_missing(tmp_path):
    with pytest.raises(DataError, match="path: expected a directory"):
        load_calibration_set(str(_folder_set(tmp_path)), tmp_path)


def test_folder_unreadable_image(tmp_path):
    _images(tmp_path / "photos", 1)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"broken\.jpg: unreadable image"):
        load_calibration_set(str(_folder_set(tmp_path)), tmp_path)


def test_caption_for_missing_file(tmp_path):
    _images(tmp_path / "photos", 1)
    (tmp_path / "photos" / "captions.jsonl").write_text(
        '{"file": "img0.png", "caption": "ok"}\n{"file": "ghost.png", "caption": "boo"}\n')
    with pytest.raises(DataError, match=r"captions\.jsonl:2: file: caption for 'ghost\.png'"):
        load_calibration_set(str(_folder_set(tmp_path)), tmp_path)


def test_caption_bad_json_and_bad_fields(tmp_path):
    _images(tmp_path / "photos", 1)
    captions = tmp_path / "photos" / "captions.jsonl"
    captions.write_text('{"file": "img0.png", "caption": \n')
    with pytest.raises(DataError, match=r"captions\.jsonl:1: invalid JSON"):
        load_calibration_set(str(_folder_set(tmp_path)), tmp_path)
    captions.write_text('{"file": "img0.png", "text": "x"}\n')
    with pytest.raises(DataError, match=r"captions\.jsonl:1: .*caption"):
        load_calibration_set(str(_folder_set(tmp_path)), tmp_path)


def test_explicit_captions_file_must_exist(tmp_path):
    _images(tmp_path / "photos", 1)
    with pytest.raises(DataError, match="captions: .*labels.jsonl not found"):
        load_calibration_set(str(_folder_set(tmp_path, "captions: labels.jsonl\n")), tmp_path)
