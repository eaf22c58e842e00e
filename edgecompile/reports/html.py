"""The HTML pages of the reports, rendered from jinja2 templates (see ``render``).

The hand-written Markdown-to-HTML converter that used to live here is gone: the HTML report is
laid out for reading (verdict first, cards, plots) and the Markdown report stays for terminals,
pull-request comments and diffs. Both read the same view data.
"""

from __future__ import annotations

from typing import Any

from edgecompile.reports.render import render


def build_page(view: dict[str, Any], images: dict[str, bytes], plots_missing: str | None = None) -> str:
    """One build's page."""
    from edgecompile.robustness.corruptions import COMPARABILITY

    return render("build.html.j2", images, title=view["title"], v=view, plots_missing=plots_missing, corruption_note=COMPARABILITY)


def sweep_page(view: dict[str, Any], images: dict[str, bytes], plots_missing: str | None = None) -> str:
    """The multi-build (sweep) page."""
    from edgecompile.robustness.corruptions import COMPARABILITY

    any_robustness = any(r.get("robustness") for g in view["groups"] for r in g["rows"])
    return render("sweep.html.j2", images, title="edgecompile sweep report", s=view, plots_missing=plots_missing, corruption_note=COMPARABILITY, any_robustness=any_robustness)
