"""Numbers at the precision that carries their meaning, for the Markdown and HTML reports.

A fixed ``.4g`` printed a cosine of 0.99996 as "1", hiding exactly the digits a reader checks a
quantized model by. Values close to 1 (cosines, ratios, accuracies) keep two significant digits
of their distance from 1; other values keep four significant digits; counts stay integers.
"""

from __future__ import annotations

import math
from typing import Any


def number(value: Any) -> str:
    """``value`` for a table cell: 'n/a' for None, integers as is, floats at meaningful precision."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "0"
    a = abs(value)
    if 0.9 <= a < 1.0:
        decimals = min(9, max(4, math.ceil(-math.log10(1.0 - a)) + 1))
        return _trim(f"{value:.{decimals}f}")
    if a >= 10000:
        return f"{value:,.0f}"
    return _trim(f"{value:.4g}") if "e" not in f"{value:.4g}" else f"{value:.3g}"


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def delta(value: float | None, reference: float | None) -> str:
    """'x0.58' style ratio of artifact over reference ('' when either is missing)."""
    if value is None or reference in (None, 0):
        return ""
    return f"×{value / reference:.2f}"  # type: ignore[operator]


def status_of(gate: dict[str, Any]) -> str:
    """passed / failed / pending, for reports written before gates carried a status."""
    return gate.get("status") or ("passed" if gate.get("passed") else "failed")


def verdict_status(verdict: str | None) -> str:
    """The report's verdict word as a status class: passed / failed / pending."""
    return {"pass": "passed", "passed": "passed", "fail": "failed", "failed": "failed", "pending": "pending"}.get(str(verdict).lower(), "failed")
