"""Comparisons a reviewer accepts: the difference, its 95% interval, a p-value, Holm's
correction and the minimum detectable effect — the one statistics layer every table, layout,
figure and the report use.

Two runs' cells are compared by their per-seed values (one number per student seed, e.g. the
last-epoch top-1 of each run):

* **paired** (Student's t on the seed-wise differences, ``scipy.stats.ttest_rel``) when both
  sides hold the same seeds: a seed fixes the data order, augmentation and initialisation, so
  runs that share it are matched pairs and the seed-to-seed variation cancels;
* **Welch** (unequal-variance t, ``scipy.stats.ttest_ind(equal_var=False)``, Welch–Satterthwaite
  degrees of freedom) otherwise — the table says which test each comparison used.

The interval is the t interval of the difference at ``1 - alpha`` (95%). The minimum detectable
effect (MDE) is the smallest true difference the same test would detect with probability
``power`` (80%) at two-sided ``alpha``, given the observed spread: the δ solving
``P(|T| > t_{1-α/2,df}) = power`` for ``T ~ noncentral t(df, δ/SE)`` (``scipy.stats.nct``). A
difference that is not significant is "not detected at this power (MDE x)", never "no
difference". When a table marks several comparisons, their p-values are adjusted by Holm's
step-down method (family-wise error ``alpha``) and marks follow the adjusted values.

Degenerate cases, stated rather than hidden: fewer than two runs on a side, or a paired test
whose seeds do not match, raise :class:`NotComparable` (one line naming the values); a spread of
exactly zero gives p = 0 (a non-zero difference) or 1 (none), a zero-width interval and MDE 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..errors import KDBenchError

__all__ = ["ALPHA", "POWER", "Comparison", "Family", "NotComparable", "compare",
           "format_difference", "holm", "minimum_detectable_effect", "paired", "seed_values",
           "welch", "with_holm"]

#: two-sided significance level of every test and 1 - the interval's coverage
ALPHA = 0.05
#: the power at which the minimum detectable effect is stated
POWER = 0.8
PAIRINGS = ("auto", "paired", "welch")


class NotComparable(KDBenchError):
    """A comparison the data cannot make (too few runs, unmatched seeds): a table shows "n/a"
    with this message as the reason."""

    exit_code = 2


@dataclass(frozen=True)
class Comparison:
    """One comparison of a cell (``a``) with its reference (``b``): ``diff = a − b``."""

    diff: float
    low: float
    high: float
    p: float
    test: str  # "paired" or "welch"
    n_a: int
    n_b: int
    df: float
    se: float
    mde: float
    alpha: float = ALPHA
    #: Holm-adjusted p within the table's family of comparisons (None: not adjusted)
    p_holm: float | None = None

    @property
    def p_used(self) -> float:
        """The p-value the mark follows: Holm's where the table adjusted, else the raw one."""
        return self.p if self.p_holm is None else self.p_holm

    @property
    def detected(self) -> bool:
        return self.p_used < self.alpha

    def to_dict(self) -> dict[str, float | str | int | None]:
        return {"diff": self.diff, "low": self.low, "high": self.high, "p": self.p,
                "p_holm": self.p_holm, "test": self.test, "n_a": self.n_a, "n_b": self.n_b,
                "df": self.df, "se": self.se, "mde": self.mde, "alpha": self.alpha}


def _values(xs: Sequence[float], side: str) -> list[float]:
    out = [float(x) for x in xs]
    bad = [x for x in out if not math.isfinite(x)]
    if bad:
        raise NotComparable(f"{side} has a non-finite value ({bad[0]})")
    return out


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def minimum_detectable_effect(se: float, df: float, *, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest true difference a two-sided t test with standard error ``se`` and ``df``
    degrees of freedom detects with probability ``power`` at level ``alpha``."""
    from scipy import optimize, stats

    if not se > 0:
        return 0.0
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(nc: float) -> float:
        # the far tail is negligible for nc > 0, and scipy's nct can return NaN deep in it
        far = stats.nct.cdf(-crit, df, nc)
        return float(stats.nct.sf(crit, df, nc)) + (0.0 if math.isnan(far) else far) - power

    hi = crit + stats.norm.ppf(power) + 1.0
    while shortfall(hi) < 0:
        hi *= 1.5
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-12)) * se


def _finish(diff: float, se: float, df: float, test: str, n_a: int, n_b: int, alpha: float,
            power: float) -> Comparison:
    from scipy import stats

    if se > 0:
        t = diff / se
        p = float(2 * stats.t.sf(abs(t), df))
        half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    else:  # no spread at all: the difference is exact
        p, half = (0.0 if diff != 0 else 1.0), 0.0
    return Comparison(diff=diff, low=diff - half, high=diff + half, p=p, test=test, n_a=n_a,
                      n_b=n_b, df=df, se=se,
                      mde=minimum_detectable_effect(se, df, alpha=alpha, power=power),
                      alpha=alpha)


def paired(a: Sequence[float], b: Sequence[float], *, alpha: float = ALPHA,
           power: float = POWER) -> Comparison:
    """Paired t on ``a[i] − b[i]`` (the same seed at the same index)."""
    a, b = _values(a, "a"), _values(b, "b")
    if len(a) != len(b):
        raise NotComparable(f"a paired comparison needs one value per seed on both sides, got "
                            f"{len(a)} and {len(b)}")
    if len(a) < 2:
        raise NotComparable(f"a comparison needs at least 2 runs a side, got {len(a)}")
    d = [x - y for x, y in zip(a, b)]
    se = math.sqrt(_var(d) / len(d))
    return _finish(_mean(d), se, len(d) - 1, "paired", len(a), len(b), alpha, power)


def welch(a: Sequence[float], b: Sequence[float], *, alpha: float = ALPHA,
          power: float = POWER) -> Comparison:
    """Welch's unequal-variance t on the means of ``a`` and ``b``."""
    a, b = _values(a, "a"), _values(b, "b")
    if min(len(a), len(b)) < 2:
        raise NotComparable(f"a comparison needs at least 2 runs a side, got {len(a)} and "
                            f"{len(b)}")
    va, vb = _var(a) / len(a), _var(b) / len(b)
    se = math.sqrt(va + vb)
    if se > 0:
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    else:
        df = float(len(a) + len(b) - 2)
    return _finish(_mean(a) - _mean(b), se, df, "welch", len(a), len(b), alpha, power)


def compare(a: Mapping[int, float], b: Mapping[int, float], *, pairing: str = "auto",
            alpha: float = ALPHA, power: float = POWER) -> Comparison:
    """Compare two cells given as ``{seed: value}``.

    ``pairing="auto"`` pairs by seed when both cells hold exactly the same seeds, else uses
    Welch; ``"paired"`` insists (seeds that do not match are :class:`NotComparable`);
    ``"welch"`` never pairs.
    """
    if pairing not in PAIRINGS:
        raise NotComparable(f"unknown pairing {pairing!r} (valid: {', '.join(PAIRINGS)})")
    same = set(a) == set(b)
    if pairing == "paired" and not same:
        raise NotComparable(f"a paired comparison needs the same seeds on both sides, got "
                            f"{_seeds(a)} and {_seeds(b)}")
    if pairing != "welch" and same:
        seeds = sorted(a)
        return paired([a[s] for s in seeds], [b[s] for s in seeds], alpha=alpha, power=power)
    return welch(list(a.values()), list(b.values()), alpha=alpha, power=power)


def _seeds(cell: Mapping[int, float]) -> str:
    return "seeds " + (",".join(map(str, sorted(cell))) or "none")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (each capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def with_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons of one table with Holm-adjusted p-values (one family)."""
    adjusted = holm([c.p for c in comparisons])
    return [replace(c, p_holm=p) for c, p in zip(comparisons, adjusted)]


def _signed(x: float, digits: int) -> str:
    text = f"{x:+.{digits}f}"
    return text.replace("-", "−")


def format_difference(c: Comparison, digits: int = 2, *, interval: bool = True,
                      p: bool = True) -> str:
    """``+1.03 (+0.89 to +1.18) p=0.001``, or for a difference not detected at this power
    ``+0.22 (−4.03 to +4.47) p=0.85, MDE 6.10`` (the caller marks detected ones)."""
    parts = [_signed(c.diff, digits)]
    if interval:
        parts.append(f"({_signed(c.low, digits)} to {_signed(c.high, digits)})")
    if p:
        shown = c.p_used
        parts.append(f"p={shown:.2g}" if shown >= 0.001 else "p<0.001")
    text = " ".join(parts)
    if not c.detected:
        text += f", MDE {c.mde:.{digits}f}"
    return text


# ============================== a table's family of comparisons ================================


def seed_values(seeds: Sequence[object], values: Sequence[float], where: str = "a cell"
                ) -> dict[object, float]:
    """``{seed: value}`` of one cell; two runs with one seed (different configurations pooled in
    the cell) cannot be paired and are :class:`NotComparable`."""
    out: dict[object, float] = {}
    for seed, value in zip(seeds, values):
        if seed in out:
            raise NotComparable(f"{where} holds two runs with seed {seed} (different "
                                f"configurations); separate them with --rows/--cols/--where")
        out[seed] = float(value)
    return out


class Family:
    """The comparisons one table marks: :meth:`add` each (a cell against its reference), then
    :meth:`text` formats one with Holm's adjustment over all of them; comparisons the data
    cannot make are "n/a" cells whose reasons :meth:`caption` lists as footnotes."""

    def __init__(self, pairing: str = "auto", alpha: float = ALPHA, power: float = POWER):
        self.pairing, self.alpha, self.power = pairing, alpha, power
        self._items: list[Comparison | NotComparable] = []
        self._adjusted: list[Comparison | NotComparable] | None = None

    def add(self, a: Mapping, b: Mapping) -> int:
        """Compare ``a`` with its reference ``b`` (``{seed: value}``); the index to format."""
        try:
            item: Comparison | NotComparable = compare(a, b, pairing=self.pairing,
                                                       alpha=self.alpha, power=self.power)
        except NotComparable as exc:
            item = exc
        self._items.append(item)
        self._adjusted = None
        return len(self._items) - 1

    def add_failure(self, reason: str) -> int:
        """A comparison known to be impossible (e.g. no reference cell): an "n/a" cell."""
        self._items.append(NotComparable(reason))
        self._adjusted = None
        return len(self._items) - 1

    def results(self) -> list[Comparison | NotComparable]:
        if self._adjusted is None:
            ok = [i for i, c in enumerate(self._items) if isinstance(c, Comparison)]
            adjusted = with_holm([self._items[i] for i in ok]) if len(ok) > 1 else [
                self._items[i] for i in ok]
            out = list(self._items)
            for i, c in zip(ok, adjusted):
                out[i] = c
            self._adjusted = out
        return self._adjusted

    def reasons(self) -> list[str]:
        return list(dict.fromkeys(str(c) for c in self.results()
                                  if isinstance(c, NotComparable)))

    def text(self, index: int, digits: int = 2) -> tuple[str, bool]:
        """``(text, detected)``: the formatted difference, or ``n/a [k]`` naming footnote k."""
        item = self.results()[index]
        if isinstance(item, NotComparable):
            return f"n/a, note {self.reasons().index(str(item)) + 1}", False
        return format_difference(item, digits), item.detected

    def tests(self) -> str:
        used = sorted({c.test for c in self.results() if isinstance(c, Comparison)})
        return " and ".join({"paired": "paired t by seed", "welch": "Welch's t"}[t]
                            for t in used) or "none"

    def caption(self) -> str:
        """What the marks mean: the tests used, Holm over how many, the MDE, the footnotes."""
        made = sum(isinstance(c, Comparison) for c in self.results())
        text = (f"differences with 95% CI (per comparison) and p ({self.tests()}"
                + (f"; Holm-adjusted over the table's {made} comparisons" if made > 1 else "")
                + f"); bold = detected at {self.alpha:g}; MDE = the smallest difference "
                  f"detectable with {self.power:.0%} power at this spread (not detected at "
                  f"this power)")
        notes = self.reasons()
        if notes:
            text += "; n/a notes: " + "; ".join(f"({k}) {r}" for k, r in enumerate(notes, 1))
        return text
