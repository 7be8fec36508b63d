"""Small inline-SVG charts for the report page: lines and points on linear axes, a shaded band,
vertical marks, a legend, and a hover text on every point (an SVG ``<title>``, shown by any
browser without a script).

Hand-written rather than matplotlib's SVG so that a page of dozens of figures stays small, every
point carries its own hover text, the text stays text (searchable, crisp when printed) and the
colours come from the page's stylesheet. Markup is HTML5 inline SVG: no namespace, no external
reference.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2008), black last.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000")


@dataclass
class Series:
    """One line of a chart: ``y`` may hold None (not measured there, e.g. an evaluator run
    every 5 epochs: the line goes on to the next point) or NaN (a gap: the line breaks).
    ``tips`` are the hover texts of the points (default: label, x and y); ``band`` is a
    (low, high) pair of sequences shaded behind the line (mean ± std)."""

    label: str
    x: Sequence[float]
    y: Sequence[float | None]
    tips: Sequence[str] | None = None
    band: tuple[Sequence[float], Sequence[float]] | None = None
    dashed: bool = False
    line: bool = True
    points: bool = True
    point_labels: Sequence[str] | None = None
    color: str | None = None


@dataclass
class Mark:
    """A vertical line at ``x`` with a label (a stage starting, the best epoch)."""

    x: float
    label: str


@dataclass
class Axis:
    lo: float
    hi: float
    ticks: list[float] = field(default_factory=list)
    step: float = 1.0

    def label(self, v: float) -> str:
        """A tick's text with as many decimals as the step needs (4.1582, 4.1584, ...)."""
        if v == 0 or abs(v) < self.step * 1e-9:
            return "0"
        if abs(v) >= 1e5 or abs(self.step) < 1e-4:
            return f"{v:.3g}"
        return f"{v:.{max(0, -math.floor(math.log10(self.step) + 1e-9))}f}"


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, target: int = 5) -> Axis:
    """An axis from ``lo`` to ``hi`` widened to round numbers, with ticks at 1, 2 or 5 × 10^k
    steps (about ``target`` of them)."""
    if not (_finite(lo) and _finite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    n = int(round((stop - start) / step))
    return Axis(start, stop, [start + i * step for i in range(n + 1)], step)


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.6g}" if float(v).is_integer() else f"{v:.4g}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _log10(series: Sequence[Series], marks: Sequence[Mark]
           ) -> tuple[list[Series], list[Mark]]:
    """The series and marks with x as log10(x) (x <= 0 dropped)."""
    def lg(v: float | None) -> float | None:
        return math.log10(v) if _finite(v) and v > 0 else None

    return ([dataclasses.replace(s, x=[lg(x) for x in s.x]) for s in series],
            [Mark(lg(m.x), m.label) for m in marks if lg(m.x) is not None])


def chart(series: Sequence[Series], *, title: str, xlabel: str, ylabel: str,
          marks: Sequence[Mark] = (), width: int = 460, height: int = 300,
          integer_x: bool = False, log_x: bool = False) -> str:
    """An SVG line/point chart of ``series`` (see :class:`Series`) as a markup string. With
    ``log_x`` the x axis is logarithmic (ticks at powers of ten where there are two or more)."""
    if log_x:
        series, marks = _log10(series, marks)
    xs = [x for s in series for x, y in zip(s.x, s.y) if _finite(x) and _finite(y)]
    ys = [y for s in series for y in s.y if _finite(y)]
    for s in series:
        if s.band is not None:
            ys += [v for v in (*s.band[0], *s.band[1]) if _finite(v)]
    xs += [m.x for m in marks if _finite(m.x)]
    xa = nice_ticks(min(xs, default=0.0), max(xs, default=1.0))
    if integer_x:
        xa.ticks = [t for t in xa.ticks if float(t).is_integer()] or xa.ticks
    ya = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    x_label = xa.label
    if log_x:
        decades = [float(t) for t in range(math.ceil(xa.lo), math.floor(xa.hi) + 1)]
        xa.ticks = decades if len(decades) >= 2 else xa.ticks

        def x_label(t: float) -> str:
            return f"{10 ** t:.3g}"
    legend_rows = math.ceil(len(series) / 2) if len(series) > 1 else 0
    left, right, top = 58, 26, 30  # room for the y labels and the last x label
    bottom = 44 + 16 * legend_rows
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - xa.lo) / (xa.hi - xa.lo) * pw

    def py(y: float) -> float:
        return top + ph - (y - ya.lo) / (ya.hi - ya.lo) * ph

    out = [f'<svg class="kd-chart" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{_e(title)}">',
           f'<text class="kd-title" x="{width / 2:.1f}" y="18" text-anchor="middle">'
           f'{_e(title)}</text>']
    # ---- axes and grid ---------------------------------------------------------------------------
    for t in ya.ticks:
        y = py(t)
        out.append(f'<line class="kd-grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/><text class="kd-tick" x="{left - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{ya.label(t)}</text>')
    for t in xa.ticks:
        x = px(t)
        out.append(f'<line class="kd-grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                   f'y2="{top + ph}"/><text class="kd-tick" x="{x:.1f}" y="{top + ph + 15}" '
                   f'text-anchor="middle">{x_label(t)}</text>')
    out.append(f'<rect class="kd-frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>')
    out.append(f'<text class="kd-label" x="{left + pw / 2:.1f}" y="{top + ph + 32}" '
               f'text-anchor="middle">{_e(xlabel)}</text>')
    out.append(f'<text class="kd-label" transform="translate(14 {top + ph / 2:.1f}) '
               f'rotate(-90)" text-anchor="middle">{_e(ylabel)}</text>')
    for m in marks:
        if _finite(m.x):
            x = px(m.x)
            out.append(f'<g class="kd-mark"><line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" '
                       f'y2="{top + ph}"/><text x="{x + 3:.1f}" y="{top + 11}">{_e(m.label)}'
                       f'</text><title>{_e(m.label)} (x = {_fmt(m.x)})</title></g>')
    # ---- series ----------------------------------------------------------------------------------
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        out.append(f'<g class="kd-series" data-label="{_e(s.label)}" style="color:{color}">')
        if s.band is not None:
            pts = [(x, lo, hi) for x, lo, hi in zip(s.x, *s.band)
                   if _finite(x) and _finite(lo) and _finite(hi)]
            if len(pts) > 1:
                upper = " ".join(f"{px(x):.1f},{py(hi):.1f}" for x, _, hi in pts)
                lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _ in reversed(pts))
                out.append(f'<polygon class="kd-band" points="{upper} {lower}"/>')
        if s.line:
            segment: list[str] = []
            for x, y in [*zip(s.x, s.y), (None, None)]:
                if _finite(x) and _finite(y):
                    segment.append(f"{px(x):.1f},{py(y):.1f}")
                    continue
                if _finite(x) and y is None:  # not measured there (every N epochs): go on
                    continue
                if len(segment) > 1:
                    dash = ' stroke-dasharray="5 3"' if s.dashed else ""
                    out.append(f'<polyline class="kd-line" points="{" ".join(segment)}"'
                               f'{dash}/>')
                segment = []
        if s.points:
            for j, (x, y) in enumerate(zip(s.x, s.y)):
                if not (_finite(x) and _finite(y)):
                    continue
                tip = s.tips[j] if s.tips is not None else f"{s.label}: {_fmt(x)}, {_fmt(y)}"
                out.append(f'<circle class="kd-point" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3">'
                           f'<title>{_e(tip)}</title></circle>')
                if s.point_labels is not None and s.point_labels[j]:
                    out.append(f'<text class="kd-point-label" x="{px(x) + 4:.1f}" '
                               f'y="{py(y) - 5:.1f}">{_e(s.point_labels[j])}</text>')
        out.append("</g>")
    # ---- legend ----------------------------------------------------------------------------------
    if legend_rows:
        for i, s in enumerate(series):
            color = s.color or PALETTE[i % len(PALETTE)]
            x = left + (i % 2) * (pw / 2)
            y = top + ph + 46 + 16 * (i // 2)
            dash = ' stroke-dasharray="5 3"' if s.dashed else ""
            out.append(f'<g class="kd-legend" style="color:{color}"><line x1="{x:.1f}" '
                       f'x2="{x + 18:.1f}" y1="{y - 4}" y2="{y - 4}"{dash}/><text '
                       f'x="{x + 23:.1f}" y="{y}">{_e(_short(s.label, 34))}</text>'
                       f'<title>{_e(s.label)}</title></g>')
    out.append("</svg>")
    return "".join(out)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"
