"""What yaml.safe_load lets through and a strict document format must not.

safe_load never runs code, but it keeps the last of two identical keys (a silent override), and
expands anchors and aliases without limit (a few hundred bytes of nested aliases can take
gigabytes). Recipes, targets, calibration and eval sets are small hand-written files: anchors,
aliases and duplicate keys are refused before anything is constructed, with the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases, merge keys and duplicate keys while it composes the tree.

    One pass over the text builds both the node tree (for line numbers) and the data: a 23 MB
    recipe used to be parsed four times (events, tree, data, tree again). (The PyYAML here has no
    libyaml, so the pure-Python parser sets the pace: about 1 MB/s.)
    """

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - PyYAML's signature
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused(event.start_mark.line + 1, "YAML anchors and aliases are not accepted (write the value out)")
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor):  # noqa: ANN001, ANN201
        node = super().compose_mapping_node(anchor)
        seen: dict[str, int] = {}
        for key, _ in node.value:
            name = str(key.value)
            if key.tag == "tag:yaml.org,2002:merge":
                raise _Refused(key.start_mark.line + 1, "YAML merge keys ('<<') are not accepted (write the keys out)")
            if name in seen:
                raise _Refused(key.start_mark.line + 1, f"key '{name}' appears twice (first at line {seen[name]}); the second would silently replace the first")
            seen[name] = key.start_mark.line + 1
        return node


class _Refused(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) from one composition of ``text``; _Refused or yaml.YAMLError otherwise."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return data, node


def yaml_problem(text: str) -> tuple[int, str] | None:
    """(line, message) of the first anchor, alias or duplicate key in ``text``; None when clean.

    Malformed YAML is left for the caller to report.
    """
    try:
        _load(text)
    except _Refused as exc:
        return exc.line, exc.message
    except yaml.YAMLError:
        return None
    return None


def decode_text(raw: bytes) -> str | None:
    """The file's text, or None when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_file(path: Path, error: type[Exception], *, what: str, invalid: str = "not valid YAML") -> tuple[Any, yaml.Node | None]:
    """Read ``path`` as strict YAML: (data, composed node tree), or ``error`` naming file:line.

    One reader for recipes, targets, calibration and eval sets and sweep grids: missing or
    unreadable files, non-UTF-8 bytes, anchors/aliases, duplicate keys and malformed YAML.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    text = decode_text(raw)
    if text is None:
        raise error(f"{path}: not UTF-8 text; {what} are UTF-8 YAML")
    try:
        return _load(text)
    except _Refused as exc:
        raise error(f"{path}:{exc.line}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise error(f"{where}: {invalid}: {getattr(exc, 'problem', exc)}") from None
