"""The one table renderer and the one cell formatter of every layout.

:func:`render` turns a table's body, headers and caption into GitHub Markdown, LaTeX (compiles
with plain pdfLaTeX), CSV, HTML or plain text; :func:`format_cell` writes a cell's mean ± std
over seeds, with the number of seeds and a difference or gain where the layout shows one.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from ..errors import UnknownNameError

FORMATS = ("github", "latex", "csv", "html", "plain")

#: Characters the tables use that pdfLaTeX does not take as text, and what it takes instead.
LATEX_SYMBOLS = {"±": r"$\pm$", "ρ": r"$\rho$", "Δ": r"$\Delta$", "−": "-", "→": r"$\to$",
                 "×": r"$\times$", "—": "---", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$"}


def check_format(fmt: str) -> None:
    """An unknown table format is an error listing :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise UnknownNameError("table format", fmt, FORMATS)


def latex_escape(value: Any) -> str:
    """A cell or header as pdfLaTeX text: its special characters escaped and the tables' Greek
    letters and symbols (:data:`LATEX_SYMBOLS`) in math mode, so the file compiles without
    unicode packages."""
    out = str(value)
    for ch, rep in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"),
                    ("#", r"\#"), ("$", r"\$")):
        out = out.replace(ch, rep)
    for ch, rep in LATEX_SYMBOLS.items():
        out = out.replace(ch, rep)
    return out


def format_cell(mean: float, std: float, n: int, digits: int = 2, *, seeds: bool = True,
                diff: float | None = None, brackets: str = "()") -> str:
    """A cell: ``mean ± std (n)``, empty when the mean is missing.

    The ``± std`` part only over two or more seeds with a known std; ``(n)``, the number of
    seeds, unless ``seeds`` is false; then, when ``diff`` is given and known, the signed
    difference in ``brackets`` (``(+0.31)`` to the full teacher, ``[+1.20]`` a gain over CE).
    """
    if pd.isna(mean):
        return ""
    s = f"{mean:.{digits}f}"
    if n > 1 and not pd.isna(std):
        s += f" ± {std:.{digits}f}"
    if seeds:
        s += f" ({n})"
    if diff is not None and not pd.isna(diff):
        s += f" {brackets[0]}{diff:+.{digits}f}{brackets[1]}"
    return s


class Marked(str):
    """A cell whose tail (a detected difference) is bold where the format has bold: Markdown
    ``**…**``, LaTeX ``\\textbf{…}``; HTML, plain text and CSV show the text as it is (the
    caption says what bold means)."""

    head: str
    strong: str

    def __new__(cls, head: str, strong: str) -> Marked:
        obj = super().__new__(cls, head + strong)
        obj.head, obj.strong = head, strong
        return obj


def with_difference(cell: str, text: str, detected: bool, brackets: str = "[]") -> str:
    """``cell`` followed by a comparison's ``text`` in ``brackets``, bold when ``detected``."""
    tail = f"{brackets[0]}{text}{brackets[1]}" if brackets else text
    head = f"{cell} " if cell else ""
    return Marked(head, tail) if detected else head + tail


def _markup(cell: Any, fmt: str) -> Any:
    if not isinstance(cell, Marked):
        return latex_escape(cell) if fmt == "latex" else cell
    if fmt == "latex":
        return latex_escape(cell.head) + r"\textbf{" + latex_escape(cell.strong) + "}"
    if fmt == "github":
        return f"{cell.head}**{cell.strong}**"
    return str(cell)


#: what ``bold`` marks as best in a column: the highest or the lowest leading number
BOLD = ("max", "min")
_LEADING = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)")


def best_cells(body: list[list[Any]], keys: int, bold: str) -> set[tuple[int, int]]:
    """(row, column) of each column's best cell — the highest (``max``) or lowest (``min``)
    leading number, every tie included — among the columns after the first ``keys`` (the
    row labels); a column with fewer than two numbers has none."""
    if bold not in BOLD:
        raise UnknownNameError("bold", bold, BOLD)
    out: set[tuple[int, int]] = set()
    for j in range(keys, max((len(r) for r in body), default=0)):
        values = {}
        for i, row in enumerate(body):
            m = _LEADING.match(str(row[j])) if j < len(row) and row[j] is not None else None
            if m:
                values[i] = float(m.group(1))
        if len(values) < 2:
            continue
        best = max(values.values()) if bold == "max" else min(values.values())
        out |= {(i, j) for i, v in values.items() if v == best}
    return out


def render(body: list[list[Any]], headers: list[str], fmt: str, caption: str, *,
           bold: str | None = None, keys: int = 1) -> str:
    """The table in ``fmt`` (:data:`FORMATS`): the caption above it (a LaTeX comment, an HTML
    paragraph, a line of text; CSV has none), every cell as text, numbers not reparsed. LaTeX
    is a booktabs table (``\\usepackage{booktabs}``). With ``bold`` (``max`` or ``min``) each
    column's best value after the ``keys`` label columns is bold (LaTeX, Markdown, HTML)."""
    from tabulate import tabulate

    check_format(fmt)
    if fmt == "csv":
        return pd.DataFrame([[str(c) if isinstance(c, Marked) else c for c in row]
                             for row in body], columns=headers).to_csv(index=False)
    best = best_cells(body, keys, bold) if bold and fmt != "plain" else set()
    if fmt == "latex":
        cells = [[latex_escape(h) for h in headers]] + [
            [_bold(_markup(c, fmt), (i, j) in best, fmt) for j, c in enumerate(row)]
            for i, row in enumerate(body)]
        widths = [max(len(r[j]) for r in cells if j < len(r)) for j in range(len(headers))]
        head, *rows = [" & ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + r" \\"
                       for r in cells]
        return "\n".join([f"% {caption}", r"% needs \usepackage{booktabs}",
                          r"\begin{tabular}{" + "l" * len(headers) + "}", r"\toprule", head,
                          r"\midrule", *rows, r"\bottomrule", r"\end{tabular}"])
    body = [[_bold(_markup(c, fmt), (i, j) in best, fmt) for j, c in enumerate(row)]
            for i, row in enumerate(body)]
    table = tabulate(body, headers=headers, tablefmt=fmt if fmt != "plain" else "simple",
                     disable_numparse=True)
    return f"<p>{caption}</p>\n{table}" if fmt == "html" else f"{caption}\n\n{table}"


def _bold(text: Any, on: bool, fmt: str) -> Any:
    if not on or not text:
        return text
    return {"latex": f"\\textbf{{{text}}}", "github": f"**{text}**",
            "html": f"<b>{text}</b>"}.get(fmt, text)
