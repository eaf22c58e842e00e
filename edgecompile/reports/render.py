"""Render the HTML reports from the jinja2 templates in ``templates/`` (package data).

jinja2 does the escaping and the layout; the templates only arrange values that ``view`` and
``aggregate`` computed, formatted by ``format.number``. The result is one self-contained file:
the stylesheet is inlined and every plot is a base64 PNG data URI, so the page opens offline.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).with_name("templates")


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    from edgecompile.reports.format import delta, number

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["ratio"] = delta
    return env


def _version() -> str:
    """The installed version (metadata, not ``edgecompile.__version__``: the package imports the API, which imports reports)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgecompile")
    except PackageNotFoundError:
        return "unknown"


def render(template: str, images: dict[str, bytes] | None = None, **context: Any) -> str:
    """``template`` with ``context``; ``images`` (caption -> PNG bytes) become base64 strings for data URIs."""
    encoded = {k: base64.b64encode(v).decode("ascii") for k, v in (images or {}).items()}
    css = (TEMPLATES / "style.css").read_text()
    return _environment().get_template(template).render(images=encoded, css=css, version=_version(), **context) + "\n"
