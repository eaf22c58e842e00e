"""Named, reproducible calibration sets defined by YAML files in `calibration_sets/`.

    cal = load_calibration_set("balanced", Path("calibration_sets"))
    for sample in cal.samples(limit=64): ...
    cal.fingerprint()  # changes when the definition (or a folder's content) changes
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from edgecompile.data.definitions import (
    CalibrationSetDefinition, FolderSetDefinition, WorldSetDefinition,
)
from edgecompile.data.errors import DataError
from edgecompile.data.folder_source import (
    folder_content_hash, folder_samples, list_images, read_captions,
)
from edgecompile.data.samples import Sample
from edgecompile.data.world_source import world_samples
from edgecompile.data.yaml_errors import format_validation_error, load_yaml_mapping

# Bump when the world generator changes what a given definition yields.
WORLD_GENERATOR_VERSION = 1
_ADAPTER = TypeAdapter(CalibrationSetDefinition)


@dataclass(frozen=True)
class CalibrationSet:
    """A validated calibration-set definition, ready to stream samples."""

    definition: WorldSetDefinition | FolderSetDefinition
    source: Path
    images: tuple[Path, ...] = ()
    captions: tuple[tuple[str, str], ...] = ()
    captions_path: Path | None = None

    @property
    def name(self) -> str:
        """The set's name (equal to its file's stem)."""
        return self.definition.name

    @property
    def modality(self) -> str:
        """'image', 'text', 'image+text' or 'mixed'."""
        return self.definition.modality

    def __len__(self) -> int:
        d = self.definition
        if isinstance(d, WorldSetDefinition):
            return d.count
        return len(self.images) if d.count is None else min(d.count, len(self.images))

    def samples(self, limit: int | None = None) -> Iterator[Sample]:
        """Yield up to `limit` samples (default: all), in the same order every time."""
        if limit is not None and limit < 0:
            raise DataError(f"limit must be >= 0, got {limit}")
        n = len(self) if limit is None else min(limit, len(self))
        d = self.definition
        if isinstance(d, WorldSetDefinition):
            return world_samples(d, n)
        with_text = d.modality == "image+text"
        return folder_samples(list(self.images), dict(self.captions), with_text, n)

    def fingerprint(self) -> str:
        """sha256 of the definition (plus a folder's file names and bytes)."""
        payload = {"definition": self.definition.model_dump(mode="json")}
        if isinstance(self.definition, WorldSetDefinition):
            payload["world_generator_version"] = WORLD_GENERATOR_VERSION
        else:
            payload["folder_content"] = folder_content_hash(list(self.images), self.captions_path)
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def resolve_path(name_or_path: str, search_dir: Path) -> Path:
    """A `.yaml`/`.yml` path or a path with a separator is a file; anything else a name."""
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or "\\" in name_or_path:
        return Path(name_or_path)
    path = Path(search_dir) / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(search_dir).glob("*.yaml"))
        raise DataError(f"unknown calibration set {name_or_path!r}: no {path}; "
                        f"known sets: {', '.join(known) or '(none)'}")
    return path


def load_calibration_set(name_or_path: str, search_dir: Path) -> CalibrationSet:
    """Load and fully validate a calibration set by name (in `search_dir`) or YAML path."""
    path = resolve_path(name_or_path, search_dir)
    data, lines = load_yaml_mapping(path)
    try:
        definition = _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise format_validation_error(path, exc, lines) from None
    if definition.name != path.stem:
        raise DataError(f"{path}:{lines.get('name', 1)}: name: expected {path.stem!r} "
                        f"(the file's name), got {definition.name!r}")
    if isinstance(definition, WorldSetDefinition):
        return CalibrationSet(definition=definition, source=path)
    folder = (path.parent / definition.path).resolve()
    images = list_images(folder, path)
    captions: dict[str, str] = {}
    captions_path = None
    if definition.captions is not None:
        candidate = folder / definition.captions
        if candidate.is_file():
            captions_path = candidate
            captions = read_captions(captions_path, images)
        elif "captions" in data:  # named explicitly, so it must exist
            raise DataError(f"{path}:{lines['captions']}: captions: {candidate} not found")
    return CalibrationSet(definition=definition, source=path, images=tuple(images),
                          captions=tuple(sorted(captions.items())), captions_path=captions_path)
