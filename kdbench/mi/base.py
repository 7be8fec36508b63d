"""The MI-estimator contract: features T of N probe samples, inputs X, labels Y → I(X;T), I(T;Y).

An estimator is registered through ``register_mi_estimators`` as a class (or factory) taking its
settings as keyword arguments; ``estimate(t, x, y, seed=, device=)`` returns an :class:`Estimate`.
Values are in nats unless the estimator says it gives a dependence score (``unit == "score"``);
``kind`` says whether a nats value is a plain estimate, an upper or a lower bound.

Where an estimator knows the most it can report (``log N`` for ``kde`` and ``binning``, ``log B``
for ``infonce``, the label entropy for I(T;Y)) it puts that ceiling in ``details`` as
``ceiling_xt``/``ceiling_ty``; when its own rule says the features are in a regime where the
value is fixed by the estimator rather than by the data, it sets ``saturated_xt``/``saturated_ty``
and adds a one-line explanation to ``details["regime"]``, which :meth:`Estimator.estimate` emits
as a ``RuntimeWarning``. Checkpoint selection (:mod:`kdbench.mi.selection`) reads both.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import ConfigError, DataError, TrainingError
from ..spec import coerce_options

UNITS = ("nats", "score")
#: A value within this fraction of its ceiling is "at the ceiling" (saturated): e.g. ``kde`` at
#: N = 500 probes within 0.062 nats of log 500 = 6.215.
SATURATION = 0.01


class EstimatorDiverged(TrainingError):
    """An estimator's own training (decoder, probe, critic) produced a non-finite loss."""


@dataclass
class Estimate:
    """One estimate of I(X;T) and I(T;Y), the unit, the settings used and diagnostics."""

    i_xt: float
    i_ty: float
    unit: str = "nats"
    kind: str = "estimate"  # estimate | upper bound | lower bound | dependence
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Estimator:
    """Base class: validated settings (``defaults`` overlaid by keyword arguments) and input checks.

    Subclasses set ``name``, ``unit``, ``kind``, ``defaults``, ``min_samples`` and implement
    :meth:`_estimate` on float tensors ``t`` (N, ...), ``x`` (N, ...) and long ``y`` (N,).
    """

    name: ClassVar[str] = "?"
    unit: ClassVar[str] = "nats"
    kind: ClassVar[str] = "estimate"
    defaults: ClassVar[dict[str, Any]] = {}
    min_samples: ClassVar[int] = 2
    #: True when the estimate depends on ``seed`` (trained networks); repeats only make sense then.
    stochastic: bool = False
    #: string settings and their valid values
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self, **settings: Any) -> None:
        self.settings = resolve_settings(self.name, self.defaults, settings, self.choices)
        self.check_settings()

    def check_settings(self) -> None:
        """Raise :class:`ConfigError` for a setting out of its range (at creation, so a bad
        ``--select`` setting fails before any teacher is trained)."""

    def estimate(self, t: Any, x: Any, y: Any, *, seed: int = 0,
                 device: torch.device | str = "cpu") -> Estimate:
        device = torch.device(device)
        t, x, y = check_inputs(self.name, t, x, y, self.min_samples)
        with torch.random.fork_rng(devices=[]), cpu_threads(self.settings.get("threads", 0),
                                                            device):
            torch.manual_seed(seed)
            i_xt, i_ty, details = self._estimate(t.to(device), x.to(device), y.to(device),
                                                 seed=seed, device=device)
        for what, value in (("I(X;T)", i_xt), ("I(T;Y)", i_ty)):
            if not math.isfinite(value):
                raise EstimatorDiverged(f"estimator {self.name!r} gave a non-finite {what}")
        for message in details.get("regime", []):
            warnings.warn(f"kdbench: MI estimator {self.name!r}: {message}", RuntimeWarning,
                          stacklevel=2)
        return Estimate(float(i_xt), float(i_ty), self.unit, self.kind,
                        {**self.settings, "seed": seed}, details)

    def _estimate(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, seed: int,
                  device: torch.device) -> tuple[float, float, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError


@contextlib.contextmanager
def cpu_threads(threads: int, device: torch.device) -> Iterator[None]:
    """Run with ``threads`` intra-op CPU threads (0: leave torch's setting), then restore.

    The trained estimators' networks are small: on the CPU, synchronising threads for their tiny
    matrix products costs far more than it saves (10× and more on a busy machine), so they
    default to one thread.
    """
    if threads <= 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_settings(name: str, defaults: dict[str, Any], given: dict[str, Any],
                     choices: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """``defaults`` overlaid by ``given``, typed by kdbench's one value coercer (as configs and
    loss options are: booleans from true/false, yes/no, on/off, 1/0; finite numbers); unknown
    keys, uncoercible values and strings outside ``choices`` are one-line errors."""
    out = coerce_options(given, defaults, f"MI estimator {name!r}", kind="setting")
    for key, valid in (choices or {}).items():
        if key in given and out[key] not in valid:
            raise ConfigError(f"MI estimator {name!r} setting {key}={out[key]!r} is not one of "
                              f"{', '.join(valid)}")
    return out


def check_range(name: str, key: str, value: float, *, low: float | None = None,
                high: float | None = None, open_low: bool = False) -> None:
    """One-line :class:`ConfigError` when ``value`` is outside [low, high] (or (low, high])."""
    bad = ((low is not None and (value <= low if open_low else value < low))
           or (high is not None and value > high))
    if bad:
        lo = "" if low is None else f"{'>' if open_low else '>='} {low:g}"
        hi = "" if high is None else f"<= {high:g}"
        raise ConfigError(f"MI estimator {name!r} setting {key}={value!r} must be "
                          f"{' and '.join(p for p in (lo, hi) if p)}")


def near_ceiling(value: float, ceiling: float, margin: float = SATURATION) -> bool:
    """True when ``value`` is within ``margin`` × ``ceiling`` of a positive ``ceiling``."""
    return ceiling > 0 and ceiling - value < margin * ceiling


def check_inputs(name: str, t: Any, x: Any, y: Any, min_samples: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tensors of matching length, at least ``min_samples`` of them, finite features."""
    t, x, y = torch.as_tensor(t), torch.as_tensor(x), torch.as_tensor(y)
    # float64 stays float64 (the closed-form estimators compute in it); anything else is float32
    t = t if t.dtype == torch.float64 else t.float()
    x = x if x.dtype == torch.float64 else x.float()
    if t.dim() < 2 or x.dim() < 2:
        raise DataError(f"MI estimator {name!r}: T and X need a sample axis and a feature axis, "
                        f"got shapes {tuple(t.shape)} and {tuple(x.shape)}")
    n = t.shape[0]
    if x.shape[0] != n or y.shape != (n,):
        raise DataError(f"MI estimator {name!r}: T, X and Y must hold the same samples, got "
                        f"{n}, {x.shape[0]} and {tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise DataError(f"MI estimator {name!r}: labels Y must be integers")
    if n < min_samples:
        raise ConfigError(f"MI estimator {name!r} needs at least {min_samples} samples, got {n} "
                          f"(raise --samples)")
    for what, v in (("T", t), ("X", x)):
        if not torch.isfinite(v).all():
            raise DataError(f"MI estimator {name!r}: {what} contains NaN or inf values")
    return t, x, y.long()


# -- small shared helpers ---------------------------------------------------------------------

def flat(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1)


def sq_dists(v: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances between the rows of ``v`` (float64)."""
    v = flat(v).double()
    sq = (v * v).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * v @ v.T).clamp_min(0.0)


def pair_median(d2: torch.Tensor) -> float:
    """The median (mean of the two middle values for an even count, as numpy's) of the
    entries above the diagonal of a square matrix: a pairwise-distance median over i < j."""
    n = d2.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=d2.device)
    v = d2[iu[0], iu[1]].sort().values
    m = v.numel()
    return float(v[m // 2]) if m % 2 else float(0.5 * (v[m // 2 - 1] + v[m // 2]))


def plugin_entropy(ids: torch.Tensor) -> float:
    """Plug-in entropy (nats) of a discrete variable given as one integer id per sample."""
    _, counts = torch.unique(ids, return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(p * p.log()).sum())


def row_ids(v: torch.Tensor) -> torch.Tensor:
    """One integer id per distinct row of ``v`` (N, D)."""
    return torch.unique(flat(v), dim=0, return_inverse=True)[1]


def joint_ids(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return row_ids(torch.stack([a, b], dim=1))


def split_indices(n: int, holdout: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded train / held-out split of ``range(n)``; both parts get at least two samples."""
    if not 0.0 < holdout < 1.0:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    g = torch.Generator().manual_seed(int(seed) * 7919 + 1)
    order = torch.randperm(n, generator=g)
    n_held = min(max(2, round(holdout * n)), n - 2)
    return order[n_held:], order[:n_held]
