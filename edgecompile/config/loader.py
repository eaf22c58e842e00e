"""Strict YAML loading that maps every validation error back to file, line and field.

The strict reader composes the node tree (with marks) and constructs the data from it in one
pass; the data is validated with pydantic in strict JSON mode (``samples: true`` is not 1,
``samples: "8"`` is not 8, ``name: 123`` is not a string; lists still fill tuples and ints still
fill floats, as in JSON), and each error location (a tuple of keys and indices) is translated into
the line of the node it points at. A file is parsed once per process and content (error_at reuses it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgecompile.config.strict_yaml import parse_file
from edgecompile.errors import InputError

ModelT = TypeVar("ModelT", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed node tree along ``loc``; return the 1-based line of the deepest match."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((pair for pair in node.value if pair[0].value == key), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field_name(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for key in loc:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts) or "<document>"


def _message(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (not part of the schema)"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"expected one of {expected.replace(' or ', ', ')}; got {error.get('input')!r}"
    return f"{str(error.get('msg', 'invalid value')).removeprefix('Value error, ')}; got {error.get('input')!r}"


def _useful_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop pydantic's union/tag discriminator entries that are not keys in the document."""
    return tuple(k for k in loc if isinstance(k, int) or not str(k).startswith(("function-", "tagged-union")))


_PARSED: dict[tuple[str, int, int], tuple[Any, yaml.Node | None]] = {}


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Read a YAML file strictly; return (data, composed node tree), parsed once per file version."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return parse_file(path, InputError, what="recipes and targets")
    if key not in _PARSED:
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[key] = parse_file(path, InputError, what="recipes and targets")
    return _PARSED[key]


def _json_default(value: Any) -> str:
    """YAML's own scalars without a JSON form (dates, timestamps) are read as their text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def validate_strict(model: type[ModelT], data: Any) -> ModelT:
    """Validate ``data`` (plain YAML data) as ``model`` with no lax coercion (bool->int, str->number)."""
    import json

    return model.model_validate_json(json.dumps(data, default=_json_default), strict=True)


def load_document(path: Path, model: type[ModelT]) -> ModelT:
    """Load ``path`` and validate it as ``model``; errors read ``file:line: field: what was expected``."""
    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}:1: <document>: expected a mapping of fields, got {type(data).__name__}")
    try:
        return validate_strict(model, data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = _useful_loc(tuple(error["loc"]))
            lines.append(f"{path}:{_line_of(node, loc)}: {_field_name(loc)}: {_message(error)}")
        raise InputError("\n".join(lines)) from None


def line_of(path: Path, loc: tuple[Any, ...]) -> int | None:
    """The line of the node at ``loc`` in ``path`` (1-based)."""
    return _line_of(read_yaml(path)[1], loc)


def error_at(path: Path, loc: tuple[Any, ...], message: str) -> InputError:
    """An InputError for a semantic problem found after schema validation (e.g. unknown target)."""
    _, node = read_yaml(path)
    return InputError(f"{path}:{_line_of(node, loc)}: {_field_name(loc)}: {message}")
