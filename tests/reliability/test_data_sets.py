"""Bad calibration and eval sets: refused when the build starts (before export), naming the file.

A folder calibration set is checked whole at load (every image, truncated JPEGs included, and
every caption line); a user eval set is checked without its pixels (every line, label and image
file, a JPEG's end marker). A calibration set smaller than ``calibration.samples`` is a notice,
printed and kept in manifest.json.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from battery import REPO, SHAPES_CLIP, assert_refused, cli, snapshot
from recipe_files import TINY_RECIPE

BASE = TINY_RECIPE.format(name="tiny", method="minmax", min_cosine=0.9)


def _jpeg(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "JPEG")
    return buf.getvalue()


def _cut_jpeg() -> bytes:
    """A JPEG cut inside its scan data: PIL's verify() accepts it, decoding fails later."""
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    cut = data[: int(len(data) * 0.7)]
    with Image.open(io.BytesIO(cut)) as im:
        im.verify()  # the point of the case: the cheap check alone would let it through
    return cut


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, "PNG")
    return buf.getvalue()


def _project(root: Path, calibration: str = "synthetic", eval_set: str = "synthetic") -> Path:
    (root / "recipes").mkdir(parents=True)
    shutil.copytree(REPO / "targets", root / "targets")
    path = root / "recipes" / "tiny.yaml"
    path.write_text(BASE.replace("set: synthetic, samples: 8", f"set: {calibration}, samples: 8").replace("set: synthetic, samples: 16", f"set: {eval_set}, samples: 16"))
    return path


def _folder_set(root: Path, images: dict[str, bytes], captions: str | None = None, extra: str = "") -> Path:
    folder = root / "cal" / "images"
    folder.mkdir(parents=True)
    for name, data in images.items():
        (folder / name).write_bytes(data)
    if captions is not None:
        (folder / "captions.jsonl").write_text(captions)
    yaml = root / "cal" / "mine.yaml"
    yaml.write_text(f"schema_version: 1\nname: mine\ndescription: my images\ntype: folder\npath: images\n{extra}")
    return yaml


GOOD = {"a.jpg": _jpeg(), "b.png": _png(), "c.jpg": _jpeg((0, 0, 250))}

# case: (images, captions, extra YAML, the file named, words)
CALIBRATION_CASES = {
    "truncated JPEG": ({**GOOD, "d.jpg": _cut_jpeg()}, None, "modality: image\n", "d.jpg", "truncated JPEG"),
    "empty image file": ({**GOOD, "e.png": b""}, None, "modality: image\n", "e.png", "unreadable image"),
    "text file named .jpg": ({**GOOD, "f.jpg": b"not an image at all\n"}, None, "modality: image\n", "f.jpg", "unreadable image"),
    "truncated PNG": ({**GOOD, "g.png": _png()[:60]}, None, "modality: image\n", "g.png", "unreadable image"),
    "no images": ({"notes.txt": b"x"}, None, "modality: image\n", "mine.yaml", "holds no images"),
    "caption line not JSON": (GOOD, '{"file": "a.jpg", "caption": "red"}\n{oops\n', "", "captions.jsonl:2", "invalid JSON"),
    "caption for a missing image": (GOOD, '{"file": "zzz.jpg", "caption": "red"}\n', "", "captions.jsonl:1", "not an image"),
    "second caption for one image": (GOOD, '{"file": "a.jpg", "caption": "red"}\n{"file": "a.jpg", "caption": "blue"}\n', "", "captions.jsonl:2", "second caption"),
    "caption line with an extra field": (GOOD, '{"file": "a.jpg", "caption": "red", "x": 1}\n', "", "captions.jsonl:1", "expected exactly"),
    "count: true (bool->int)": (GOOD, None, "modality: image\ncount: true\n", "mine.yaml:7", "count"),
    "count: 0": (GOOD, None, "modality: image\ncount: 0\n", "mine.yaml:7", "count"),
    "unknown field": (GOOD, None, "modality: image\ncolour: red\n", "mine.yaml:7", "unknown field"),
    "duplicate key": (GOOD, None, "modality: image\nmodality: image+text\n", "mine.yaml:7", "appears twice"),
    "explicit captions file missing": (GOOD, None, "captions: nope.jsonl\n", "mine.yaml:6", "captions"),
}


@pytest.mark.parametrize("case", list(CALIBRATION_CASES))
def test_bad_calibration_set_is_refused_before_export(tmp_path: Path, case: str) -> None:
    images, captions, extra, named, words = CALIBRATION_CASES[case]
    cal = _folder_set(tmp_path, images, captions, extra)
    recipe = _project(tmp_path, calibration=str(cal))
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    outcome = cli("export", "--recipe", str(recipe), "--out", str(out))
    assert_refused(outcome, 3, named, words)
    assert not out.exists() and snapshot(tmp_path) == before


@pytest.mark.parametrize("text, named, words", [
    ("schema_version: 1\nname: other\ndescription: x\ntype: world\ncount: 4\n", "w.yaml:2", "name"),
    ("schema_version: 1\nname: w\ndescription: x\ntype: world\ncount: 4\nvariant: sepia\n", "w.yaml:6", "variant"),
    ("schema_version: 1\nname: w\ndescription: x\ntype: movie\ncount: 4\n", "w.yaml:4", "type"),
    ("schema_version: 1\nname: w\ndescription: x\ntype: world\ncount: '4'\n", "w.yaml:5", "count"),
])
def test_bad_world_calibration_set(tmp_path: Path, text: str, named: str, words: str) -> None:
    (tmp_path / "w.yaml").write_text(text)
    recipe = _project(tmp_path, calibration=str(tmp_path / "w.yaml"))
    assert_refused(cli("export", "--recipe", str(recipe), "--out", str(tmp_path / "out")), 3, named, words)
    assert not (tmp_path / "out").exists()


def test_missing_calibration_yaml_is_named_at_recipe_load(tmp_path: Path) -> None:
    recipe = _project(tmp_path, calibration=str(tmp_path / "gone.yaml"))
    assert_refused(cli("export", "--recipe", str(recipe), "--out", str(tmp_path / "out")), 3, f"{recipe}:4:", "calibration.set", "gone.yaml")


def _eval_tree(root: Path, *, broken: dict[str, bytes] | None = None) -> Path:
    for cls, color in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (root / "data" / cls).mkdir(parents=True)
        for i in range(2):
            (root / "data" / cls / f"{i}.jpg").write_bytes(_jpeg(color))
    for rel, data in (broken or {}).items():
        (root / "data" / rel).write_bytes(data)
    yaml = root / "ev.yaml"
    yaml.write_text("schema_version: 1\nname: ev\ndescription: colours\ntype: classification\npath: data\n")
    return yaml


# case: (setup(root) -> eval YAML path, named, words)
def _labels(root: Path, text: str) -> Path:
    _eval_tree(root)
    (root / "labels.csv").write_text(text)
    yaml = root / "ev.yaml"
    yaml.write_text("schema_version: 1\nname: ev\ndescription: colours\ntype: classification\nlabels: labels.csv\n")
    return yaml


EVAL_CASES = {
    "truncated JPEG in an ImageFolder": (lambda r: _eval_tree(r, broken={"red/9.jpg": _cut_jpeg()}), "9.jpg", "truncated JPEG"),
    "empty image in an ImageFolder": (lambda r: _eval_tree(r, broken={"blue/8.jpg": b""}), "8.jpg", "empty file"),
    "labels CSV naming a missing image": (lambda r: _labels(r, "file,label\ndata/red/0.jpg,red\ndata/red/404.jpg,red\n"), "404.jpg", "not found"),
    "labels CSV with a wrong header": (lambda r: _labels(r, "image,class\ndata/red/0.jpg,red\n"), "labels.csv:1", "header"),
    "a single class": (lambda r: _labels(r, "file,label\ndata/red/0.jpg,red\ndata/red/1.jpg,red\n"), "ev.yaml", "at least two classes"),
    "vqa set for a dual encoder": (lambda r: (r / "q.jsonl").write_text('{"image": "data/red/0.jpg", "question": "colour?", "answers": ["red"]}\n') and False or _vqa(r), "ev.yaml", "vqa eval set measures generative"),
    "unknown field": (lambda r: _with_text(_eval_tree(r), "schema_version: 1\nname: ev\ndescription: x\ntype: classification\npath: data\nshuffle: true\n"), "ev.yaml:6", "unknown field"),
    "not UTF-8": (lambda r: _with_bytes(_eval_tree(r), b"schema_version: 1\nname: ev\ndescription: caf\xe9\ntype: classification\npath: data\n"), "ev.yaml", "not UTF-8"),
}


def _with_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _with_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _vqa(root: Path) -> Path:
    _eval_tree(root)
    yaml = root / "ev.yaml"
    yaml.write_text("schema_version: 1\nname: ev\ndescription: q\ntype: vqa\nquestions: q.jsonl\n")
    return yaml


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_bad_eval_set_is_refused_before_export(tmp_path: Path, case: str) -> None:
    setup, named, words = EVAL_CASES[case]
    ev = setup(tmp_path)
    recipe = _project(tmp_path, eval_set=str(ev))
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    assert_refused(cli("export", "--recipe", str(recipe), "--out", str(out)), 3, named, words)
    assert not out.exists() and snapshot(tmp_path) == before


def test_fewer_calibration_images_than_samples_is_a_recorded_notice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """samples: 8 on a folder of 3 images: calibrate on 3, say so, and keep it in manifest.json."""
    from edgecompile.stages.context import BuildContext

    cal = _folder_set(tmp_path, GOOD, extra="modality: image\n")
    recipe = _project(tmp_path, calibration=str(cal))
    ctx = BuildContext.create(recipe, str(SHAPES_CLIP), tmp_path / "out")
    try:
        assert "holds 3 sample(s) but calibration.samples asks for 8: calibrating on 3" in capsys.readouterr().err
        ctx.bind()  # what the first completed stage does
        notices = json.loads((tmp_path / "out" / "manifest.json").read_text())["notices"]
        assert "calibrating on 3" in notices["calibration.samples"]
    finally:
        ctx.close()
    recipe.write_text(recipe.read_text().replace("samples: 8}", "samples: 3}"))  # now it fits: the notice goes
    ctx = BuildContext.open(tmp_path / "out")
    ctx.close()
    assert "calibration.samples" not in json.loads((tmp_path / "out" / "manifest.json").read_text())["notices"]
