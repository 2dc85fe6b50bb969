"""Small table helpers shared by the sweep summary and the HTML report: mean ± std, Markdown, CSV, HTML.

A table is a header list and rows of cells; a cell is a string, a number (formatted with ``digits``),
or None (shown as an empty cell; "-" in Markdown). No I/O here.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence

Cell = str | float | int | None
Digits = int | Sequence[int]  # decimals for every column, or one per column


def _digits(digits: Digits, n: int) -> list[int]:
    return [digits] * n if isinstance(digits, int) else list(digits)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) of the finite values; std is NaN below 2 values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    var = math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)


def fmt(value: Cell, digits: int = 2) -> str:
    """A cell as text: floats with ``digits`` decimals (NaN and None as empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.{digits}f}"
    return str(value)


def fmt_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``"76.25 ± 0.41"``; only the mean when std is NaN (a single value); empty when the mean is NaN."""
    if not math.isfinite(mean):
        return ""
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, digits: Digits = 2) -> str:
    """A GitHub-flavoured Markdown table; numeric columns right-aligned."""
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) for i in range(len(headers))]
    esc = [h.replace("|", "\\|") for h in headers]
    lines = ["| " + " | ".join(esc) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    dig = _digits(digits, len(headers))
    for r in rows:
        cells = [(fmt(c, d) or "-").replace("|", "\\|") for c, d in zip(r, dig, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """CSV with full-precision numbers (``repr`` of floats), NaN/None as empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(headers)
    for r in rows:
        w.writerow(
            ["" if c is None or (isinstance(c, float) and not math.isfinite(c)) else repr(c) if isinstance(c, float)
             else c for c in r]
        )  # fmt: skip
    return buf.getvalue()


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, digits: Digits = 2, css: str = "") -> str:
    """An escaped HTML table with a ``thead`` and a ``tbody``."""
    cls = f' class="{html.escape(css)}"' if css else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    dig = _digits(digits, len(headers))
    body = []
    for r in rows:
        tds = "".join(
            f'<td class="num">{html.escape(fmt(c, d))}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{html.escape(fmt(c, d))}</td>"
            for c, d in zip(r, dig, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


__all__ = ["Cell", "Digits", "csv_text", "fmt", "fmt_mean_std", "html_table", "markdown", "mean_std"]
