"""Numbers as text for reports: the compare stage's tables and the sweep summary share these (neither imports the
other for them)."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    v = float(value)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1 or v == 0:
        return f"{v:.2f}"
    if abs(v) >= 0.01:
        return f"{v:.3f}"
    return f"{v:.3g}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)
