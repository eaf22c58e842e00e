"""Bad build directories: corrupt records, unusable --out, refused builds; exit 3 naming the file.

A build directory here is what ``BuildContext.create`` binds (build.json naming a recipe and the
bundled model); the commands are refused when the directory is opened, before any stage, and the
directory is left byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from battery import REPO, SHAPES_CLIP, assert_refused, cli, snapshot
from recipe_files import TINY_RECIPE

BASE = TINY_RECIPE.format(name="tiny", method="minmax", min_cosine=0.9)
MANIFEST = {"schema_version": 1, "stages": {}, "notices": {}}


def _project(root: Path) -> Path:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    if not (root / "targets").exists():
        shutil.copytree(REPO / "targets", root / "targets")
    path = root / "recipes" / "tiny.yaml"
    path.write_text(BASE)
    return path


def _build_dir(root: Path) -> Path:
    recipe = _project(root)
    build = root / "build"
    build.mkdir()
    (build / "build.json").write_text(json.dumps({"recipe": str(recipe), "model": "shapes-clip", "model_dir": str(SHAPES_CLIP)}))
    from edgecompile.config.recipe import load_recipe

    (build / "recipe.resolved.json").write_text(load_recipe(recipe).model_dump_json())
    (build / "manifest.json").write_text(json.dumps(MANIFEST))
    return build


# case: (file, bytes written, words)
CORRUPT = {
    "manifest.json: not JSON": ("manifest.json", b"{", "manifest.json:1: corrupt manifest"),
    "manifest.json: cut in half": ("manifest.json", json.dumps({"schema_version": 1, "stages": {"export": {"inputs": {}}}}).encode()[:30], "corrupt manifest (not valid JSON"),
    "manifest.json: empty": ("manifest.json", b"", "corrupt manifest"),
    "manifest.json: a list": ("manifest.json", b"[1, 2]", "corrupt manifest (expected an object"),
    "manifest.json: stages a list": ("manifest.json", b'{"stages": []}', "corrupt manifest (expected an object"),
    "manifest.json: stage record missing fields": ("manifest.json", b'{"stages": {"export": {"inputs": {}}}}', "stages.export: corrupt stage record"),
    "manifest.json: not UTF-8": ("manifest.json", b'{"stages": {"\xff": 1}}', "corrupt manifest (not UTF-8"),
    "build.json: not JSON": ("build.json", b"{recipe:", "build.json:1: corrupt build record"),
    "build.json: a list": ("build.json", b"[]", "corrupt build record"),
    "build.json: model_dir missing": ("build.json", json.dumps({"recipe": "r.yaml", "model": "shapes-clip"}).encode(), "model_dir: corrupt build record"),
    "build.json: recipe a number": ("build.json", json.dumps({"recipe": 3, "model": "m", "model_dir": "d"}).encode(), "recipe: corrupt build record"),
    "build.json: not UTF-8": ("build.json", b'{"recipe": "\xfe"}', "corrupt build record"),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_record_is_named(tmp_path: Path, case: str) -> None:
    name, data, words = CORRUPT[case]
    build = _build_dir(tmp_path)
    (build / name).write_bytes(data)
    before = snapshot(tmp_path)
    outcome = cli("annotate", "--build", str(build))
    assert_refused(outcome, 3, str(build / name), words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("resolved", [None, b"{\"recipe\": 1}", b"not json"])
def test_moved_recipe_and_bad_resolved_copy(tmp_path: Path, resolved: bytes | None) -> None:
    build = _build_dir(tmp_path)
    (tmp_path / "recipes" / "tiny.yaml").unlink()
    if resolved is None:
        (build / "recipe.resolved.json").unlink()
    else:
        (build / "recipe.resolved.json").write_bytes(resolved)
    before = snapshot(tmp_path)
    assert_refused(cli("annotate", "--build", str(build)), 3, str(build / "recipe.resolved.json"), "rebuild with --recipe")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["empty folder", "missing folder"])
def test_build_flag_on_something_else(tmp_path: Path, where: str) -> None:
    target = tmp_path / "elsewhere"
    if where == "empty folder":
        target.mkdir()
    assert_refused(cli("annotate", "--build", str(target)), 3, str(target), "not an edgecompile build directory")
    assert snapshot(tmp_path) == ({"elsewhere": "dir"} if where == "empty folder" else {})


def test_out_under_a_regular_file(tmp_path: Path) -> None:
    recipe = _project(tmp_path)
    (tmp_path / "file").write_text("x")
    before = snapshot(tmp_path)
    assert_refused(cli("export", "--recipe", str(recipe), "--out", str(tmp_path / "file" / "sub" / "out")), 3, str(tmp_path / "file"), "regular file")
    assert snapshot(tmp_path) == before


def test_out_is_a_regular_file(tmp_path: Path) -> None:
    """click refuses it as a bad command line (exit 2), naming the path."""
    recipe = _project(tmp_path)
    (tmp_path / "file").write_text("x")
    outcome = cli("export", "--recipe", str(recipe), "--out", str(tmp_path / "file"))
    assert outcome.exit_code == 2 and "file" in outcome.output and (tmp_path / "file").read_text() == "x"


def _as_unprivileged(args: list[str]):  # noqa: ANN202
    """Run the CLI in-process with an effective user that may not write (root ignores permission bits)."""
    if os.geteuid() != 0:
        return cli(*args)
    cli("recipes")  # import what the command imports while still root (the interpreter lives in root's home)
    os.setegid(65534)
    os.seteuid(65534)
    try:
        return cli(*args)
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir() -> Path:
    """A folder every user can read (pytest's tmp folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="edgecompile-ro-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(root)


@pytest.mark.parametrize("case", ["read-only --out", "read-only parent of --out", "read-only existing build (--build)"])
def test_read_only_output_directory(shared_dir: Path, case: str) -> None:
    recipe = _project(shared_dir)
    for path in shared_dir.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    if case == "read-only --out":
        out = shared_dir / "out"
        out.mkdir(mode=0o555)
        args = ["export", "--recipe", str(recipe), "--out", str(out)]
        named = str(out)
    elif case == "read-only parent of --out":
        parent = shared_dir / "ro"
        parent.mkdir(mode=0o555)
        out = parent / "out"
        args = ["export", "--recipe", str(recipe), "--out", str(out)]
        named = str(out)
    else:
        build = _build_dir(shared_dir / "p")
        for path in [build, *build.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        (shared_dir / "p").chmod(0o755)
        for path in (shared_dir / "p").rglob("*"):
            if path.is_dir() and path != build:
                path.chmod(0o755)
        args = ["annotate", "--build", str(build)]
        named = str(build)
    before = snapshot(shared_dir)
    result = _as_unprivileged(args)
    output = result.output
    assert result.exit_code == 3, output
    assert named in output and ("permission denied" in output or "read-only" in output), output
    assert "Traceback" not in output
    assert snapshot(shared_dir) == before


def test_refused_recipe_leaves_an_earlier_build_as_it_was(tmp_path: Path) -> None:
    """A recipe refused at load (no gates at all) into a directory holding a build changes nothing."""
    build = _build_dir(tmp_path)
    recipe = tmp_path / "recipes" / "tiny.yaml"
    recipe.write_text(BASE.replace("gates:\n  - {name: image drift, metric: drift.vision_encoder.image_embeds.cosine_mean, min: 0.9}\n", "gates: []\nbudget_gates: false\n"))
    before = snapshot(tmp_path)
    outcome = cli("export", "--recipe", str(recipe), "--out", str(build))
    assert_refused(outcome, 3, str(recipe), "gates")
    assert snapshot(tmp_path) == before
    new = tmp_path / "new-out"
    assert_refused(cli("export", "--recipe", str(recipe), "--out", str(new)), 3, "allow_no_gates")
    assert not new.exists()


def test_moved_recipe_reopens_from_the_resolved_copy_with_the_same_meaning(tmp_path: Path) -> None:
    """The copy records only what the recipe set: validators reading ``model_fields_set`` accept it and mean the same."""
    from edgecompile.stages.context import BuildContext

    recipe = _project(tmp_path)
    ctx = BuildContext.create(recipe, "shapes-clip", tmp_path / "build")
    ctx.bind()
    ctx.close()
    original = ctx.resolved
    recipe.unlink()
    reopened = BuildContext.open(tmp_path / "build")
    try:
        assert reopened.resolved.recipe == original.recipe
        assert reopened.resolved.recipe.calibration.model_fields_set == original.recipe.calibration.model_fields_set
        assert reopened.resolved.recipe.quantization.model_fields_set == original.recipe.quantization.model_fields_set
    finally:
        reopened.close()
