"""One resolver for the names a user types: recipes, targets, calibration sets and eval sets.

Every command (build, sweep, robustness, the listings) turns a name or a path into a file through
this module, so a recipe that ``build`` accepts is accepted everywhere, and a target named by a
recipe outside the repository is found the same way by all of them.

Lookup order for a name (first hit wins):
1. a path: the value names an existing file, or ends in ``.yaml``/``.yml``;
2. the folder beside the referring file's own folder (``<project>/recipes/r.yaml`` -> ``<project>/targets/``),
   then the folder inside it (``<dir>/r.yaml`` -> ``<dir>/targets/``, a recipe kept outside ``recipes/``);
3. the current directory's folder of that kind (``./recipes``, ``./targets``, ...);
4. the user's folder: ``$XDG_CONFIG_HOME/edgecompile/<folder>`` (default ``~/.config/edgecompile/``);
5. the folders shipped with edgecompile: inside the installed package (``edgecompile/_shipped/``,
   what the wheel carries), or the repository's top level when run from a checkout.
"""

from __future__ import annotations

from pathlib import Path

from edgecompile.errors import InputError

import os

FOLDERS = {"recipe": "recipes", "target": "targets", "calibration_set": "calibration_sets", "eval_set": "eval_sets"}


def _shipped_root() -> Path:
    installed = Path(__file__).resolve().parents[1] / "_shipped"
    return installed if (installed / "recipes").is_dir() else Path(__file__).resolve().parents[2]


SHIPPED_ROOT = _shipped_root()


def user_root() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgecompile"


def search_dirs(kind: str, near: Path | None = None) -> list[Path]:
    """The folders a name of ``kind`` is looked up in, in order, without duplicates."""
    folder = FOLDERS[kind]
    candidates = []
    if near is not None:
        candidates += [near.resolve().parent.parent / folder, near.resolve().parent / folder]
    candidates += [Path.cwd() / folder, user_root() / folder, SHIPPED_ROOT / folder]
    seen: list[Path] = []
    for c in candidates:
        c = c.resolve()
        if c not in seen:
            seen.append(c)
    return seen


def origin(path: Path) -> str:
    """Where a resolved file comes from, for listings: shipped, user, project (cwd) or the path."""
    path = path.resolve()
    for label, root in (("shipped", SHIPPED_ROOT), ("user", user_root()), ("project", Path.cwd())):
        try:
            path.relative_to(root.resolve())
        except ValueError:
            continue
        return label
    return str(path.parent)


def looks_like_path(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) or "/" in value or Path(value).is_file()


def known(kind: str, near: Path | None = None) -> dict[str, Path]:
    """Every name of ``kind`` that resolves, with the file it resolves to (earlier folders win)."""
    found: dict[str, Path] = {}
    for folder in search_dirs(kind, near):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def resolve(kind: str, value: str, near: Path | None = None, *, field: str | None = None, names_only: bool = False) -> Path:
    """The file ``value`` names; an InputError listing the known names when there is none.

    ``names_only``: ``value`` is a name looked up in the folders, never a path (a recipe's ``target``).
    """
    if not names_only and looks_like_path(value):
        path = Path(value)
        if not path.is_file():
            raise InputError(f"{path}: {FOLDERS[kind][:-1].replace('_', ' ')} file not found")
        return path
    for folder in search_dirs(kind, near):
        path = folder / f"{value}.yaml"
        if path.is_file():
            return path
    where = f"{near}: {field}: " if near is not None and field else ""
    names = ", ".join(sorted(known(kind, near))) or "(none found)"
    raise InputError(f"{where}unknown {kind.replace('_', ' ')} '{value}'; expected one of {names} (looked in {', '.join(str(d) for d in search_dirs(kind, near))})")
