"""A user's folder of images (+ optional `captions.jsonl`) as calibration samples.

Everything is checked when the set is loaded, not halfway through calibration: the folder
must hold at least one readable image, and every caption line must be valid JSON naming an
image that exists. Each error names the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, ValidationError

from edgecompile.data.errors import DataError
from edgecompile.data.samples import Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class CaptionLine(BaseModel):
    """One line of captions.jsonl: {"file": "cat.png", "caption": "a cat"}."""

    model_config = ConfigDict(extra="forbid", strict=True)

    file: str
    caption: str


_JPEG = (".jpg", ".jpeg")


def truncation(image: Path) -> str | None:
    """Why ``image`` is cut short, or None. PIL's verify() does not decode a JPEG's scan data, so a
    truncated JPEG passes it and fails only when calibration decodes it; a complete JPEG ends with
    its EOI marker (FF D9, possibly followed by padding)."""
    size = image.stat().st_size
    if size == 0:
        return "empty file"
    if image.suffix.lower() in _JPEG:
        with image.open("rb") as f:
            f.seek(max(0, size - 1024))
            tail = f.read().rstrip(b"\x00\r\n \t")
        if not tail.endswith(b"\xff\xd9"):
            return "truncated JPEG (no end-of-image marker)"
    return None


def list_images(folder: Path, yaml_path: Path) -> list[Path]:
    """Return the folder's image files sorted by name; raise if none or unreadable."""
    if not folder.is_dir():
        raise DataError(f"{yaml_path}: path: expected a directory of images, "
                        f"{folder} does not exist or is not a directory")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{yaml_path}: path: folder {folder} holds no images "
                        f"(expected files ending in {', '.join(IMAGE_SUFFIXES)})")
    for image in images:
        try:
            with Image.open(image) as im:
                im.verify()
            cut = truncation(image)
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"{image}: unreadable image ({exc.__class__.__name__}: {exc}); "
                            f"listed by {yaml_path}: path") from None
        if cut is not None:
            raise DataError(f"{image}: unreadable image ({cut}); listed by {yaml_path}: path")
    return images


def read_captions(captions_path: Path, images: list[Path]) -> dict[str, str]:
    """Parse captions.jsonl into file name -> caption, checking each line."""
    names = {p.name for p in images}
    captions: dict[str, str] = {}
    for number, raw in enumerate(captions_path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{captions_path}:{number}"
        try:
            line = CaptionLine.model_validate(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg}); expected "
                            '{"file": "<image name>", "caption": "<text>"}') from None
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "line" for e in exc.errors())
            raise DataError(f"{where}: {fields}: expected exactly the string fields "
                            "'file' and 'caption'") from None
        if line.file not in names:
            raise DataError(f"{where}: file: caption for {line.file!r}, which is not an "
                            f"image in {captions_path.parent}")
        if line.file in captions:
            raise DataError(f"{where}: file: second caption for {line.file!r}")
        captions[line.file] = line.caption
    return captions


def folder_content_hash(images: list[Path], captions_path: Path | None) -> str:
    """Hash the names and bytes of the images and captions, for build caching."""
    h = hashlib.sha256()
    for path in images + ([captions_path] if captions_path else []):
        h.update(path.name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def folder_samples(images: list[Path], captions: dict[str, str], with_text: bool,
                   limit: int | None) -> Iterator[Sample]:
    """Yield samples in file-name order, opening each image only when it is needed."""
    for path in images[:limit]:
        with Image.open(path) as im:
            image = im.convert("RGB")
        text = captions.get(path.name) if with_text else None
        yield Sample(image=image, text=text)
