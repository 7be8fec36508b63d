"""The one table renderer and the one cell formatter of every layout.

:func:`render` turns a table's body, headers and caption into GitHub Markdown, LaTeX (compiles
with plain pdfLaTeX), CSV, HTML or plain text; :func:`format_cell` writes a cell's mean ± std
over seeds, with the number of seeds and a difference or gain where the layout shows one.
"""

from __future__ import annotations

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


def render(body: list[list[Any]], headers: list[str], fmt: str, caption: str) -> str:
    """The table in ``fmt`` (:data:`FORMATS`): the caption above it (a LaTeX comment, an HTML
    paragraph, a line of text; CSV has none), every cell as text, numbers not reparsed."""
    from tabulate import tabulate

    check_format(fmt)
    if fmt == "csv":
        return pd.DataFrame(body, columns=headers).to_csv(index=False)
    body = [[_markup(c, fmt) for c in row] for row in body]
    if fmt == "latex":
        headers = [latex_escape(h) for h in headers]
        return f"% {caption}\n" + tabulate(body, headers=headers, tablefmt="latex_raw",
                                           disable_numparse=True)
    table = tabulate(body, headers=headers, tablefmt=fmt if fmt != "plain" else "simple",
                     disable_numparse=True)
    return f"<p>{caption}</p>\n{table}" if fmt == "html" else f"{caption}\n\n{table}"
