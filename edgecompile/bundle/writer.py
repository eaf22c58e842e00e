"""Assemble the bundle in the build stage's output directory (see edgecompile.bundle)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from edgecompile.bundle import BUNDLE_DIR
from edgecompile.bundle.genai import write_genai
from edgecompile.bundle.io_spec import MODEL_FILES, io_description

BUNDLE_FILE = "bundle.json"
_BOOKKEEPING = {"artifact.json", "plan.effective.json"}


def _link(src: Path, dst: Path) -> None:
    """A hard link where possible (no second copy of the weights), else a copy."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(src), str(dst))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def write_bundle(
    out: Path, backend: str, components: dict[str, str], exported: dict[str, Path], model_dir: Path | None,
    *, generation: dict[str, Any] | None = None, text_config: Any = None, target: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out/bundle/`` from the artifact files in ``out``; return bundle.json's content."""
    bundle = out / BUNDLE_DIR
    bundle.mkdir()
    for item in sorted(out.iterdir()):
        if item.name in _BOOKKEEPING or item.name == BUNDLE_DIR:
            continue
        _link(item, bundle / item.name)
    copied = []
    if model_dir is not None:
        for name in MODEL_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, bundle / name)
                copied.append(name)
    files = {c: bundle / f for c, f in components.items()}
    io = io_description(files, exported, model_dir, generation)
    (bundle / "io.json").write_text(json.dumps(io, indent=1))
    notes: list[str] = []
    if generation is not None and backend == "ort-cpu" and text_config is not None:
        notes += write_genai(bundle, files, generation, text_config)
        if generation.get("visual_token_mask"):
            notes.append("the decoder prunes visual tokens when fed visual_token_mask (io.json generation.visual_token_mask); onnxruntime-genai does not feed it, so under genai_config.json it runs unpruned")
    record = {
        "schema_version": 1,
        "backend": backend,
        "target": target or {},
        "components": dict(components),
        "model_files": copied,
        "io": "io.json",
        "notes": notes,
        "files": {str(p.relative_to(bundle)): {"bytes": p.stat().st_size, "sha256": _digest(p)} for p in sorted(bundle.rglob("*")) if p.is_file()},
    }
    (bundle / BUNDLE_FILE).write_text(json.dumps(record, indent=1))
    return record
