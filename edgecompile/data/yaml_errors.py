"""Turn YAML and pydantic failures into `file:line: field: expected ...` messages.

Why: a user editing a calibration-set YAML must see which line and field to fix, not a
pydantic traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from edgecompile.config.strict_yaml import parse_file
from edgecompile.data.errors import DataError

_UNION_TAGS = ("world", "folder", "classification", "retrieval", "vqa", "captioning")


def load_yaml_mapping(path: Path) -> tuple[dict, dict[str, int]]:
    """Load a YAML mapping with `yaml.safe_load`; return it with top-level key -> line."""
    data, node = parse_file(path, DataError, what="calibration and eval sets", invalid="invalid YAML")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping of fields at the top level, "
                        f"got {type(data).__name__}")
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            lines[str(key.value)] = key.start_mark.line + 1
    return data, lines


def format_validation_error(path: Path, exc: ValidationError, lines: dict[str, int]) -> DataError:
    """Return a DataError with one `file:line: field: message` line per pydantic error."""
    messages = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # Discriminated unions put the tag ("world"/"folder", an eval set's kind) first in the location.
        if loc and loc[0] in _UNION_TAGS and len(loc) > 1:
            loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the discriminator itself
            loc = ["type"]
        field = ".".join(loc) or "(top level)"
        line = lines.get(loc[0]) if loc else None
        where = f"{path}:{line}" if line else str(path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] in ("missing", "union_tag_not_found"):
            msg = "required field is missing"
        messages.append(f"{where}: {field}: {msg}")
    return DataError("\n".join(messages))
