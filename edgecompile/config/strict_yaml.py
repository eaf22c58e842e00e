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


def yaml_problem(text: str) -> tuple[int, str] | None:
    """(line, message) of the first anchor, alias or duplicate key in ``text``; None when clean.

    Malformed YAML is left for the caller's safe_load to report.
    """
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return event.start_mark.line + 1, "YAML anchors and aliases are not accepted (write the value out)"
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                name = str(key.value)
                if name in seen:
                    return key.start_mark.line + 1, f"key '{name}' appears twice (first at line {seen[name]}); the second would silently replace the first"
                seen[name] = key.start_mark.line + 1
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
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
    problem = yaml_problem(text)
    if problem is not None:
        raise error(f"{path}:{problem[0]}: {problem[1]}")
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise error(f"{where}: {invalid}: {getattr(exc, 'problem', exc)}") from None
