"""Audit of kdbench's MI estimators on cases whose mutual information is known in closed form.

Every registered built-in estimator (and the remedies as settings) runs on

- ``gauss``: a Gaussian channel T = A·X + ε, X ~ N(0, I_d), ε ~ N(0, I_d), A = c·G/√d with G a
  fixed Gaussian matrix and c set so that I(X;T) = ½·log det(I + A·Aᵀ) = 2 nats; Y = the
  quadrant of (T_1, T_2), a deterministic function of T, so I(T;Y) = H(Y) from the bivariate
  orthant probabilities ¼ ± arcsin(r)/(2π);
- ``indep``: X, T ~ N(0, I_d) independent, Y uniform over 4 classes independent of both:
  I(X;T) = I(T;Y) = 0;
- ``mixture``: Y uniform over 4 classes, T = μ_Y + N(0, I_d) with the μ_k on a circle of radius
  2 in the first two coordinates (the same I(T;Y) at every d, computed by Monte Carlo from the
  exact mixture density, 400 000 draws), X ~ N(0, I_d) independent: I(X;T) = 0;
- ``patterns``: X one of 16 fixed Gaussian code vectors (each exactly N/16 times, so the seeds
  only reorder the samples), T = 3·tanh(W·X) (injective on the codes), Y = code index mod 2:
  I(X;T) = log 16, I(T;Y) = log 2;

at d ∈ {2, 16, 64}, N ∈ {500, 2000}, seeds 0, 1, 2, and writes a Markdown report: bias
(estimate − truth) and spread (standard deviation over the seeds) per estimator, case, dimension
and sample size — or, for the dependence scores (``cka``, ``nhsic``), their value — with the
number of seeds whose regime rule fired. A second part runs ``recon`` at d = 64 on a diagonal
Gaussian channel (I = 2 nats) for N up to 32 000 with the decoder settings that close its bias.

    OMP_NUM_THREADS=1 python benchmarks/mi_audit.py --out docs/mi-audit.md --raw docs/mi-audit.json
    python benchmarks/mi_audit.py --render docs/mi-audit.json --out docs/mi-audit.md  # no rerun
    python benchmarks/mi_audit.py --quick --out /tmp/audit.md                        # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from kdbench.plugins import get

#: (label, registered name, settings): the defaults, then the remedies the regime rules name
ESTIMATORS: list[tuple[str, str, dict[str, Any]]] = [
    ("recon", "recon", {}),
    ("infonce", "infonce", {}),
    ("binning", "binning", {}),
    ("binning pca=2", "binning", {"project": "pca", "project_dim": 2}),
    ("kde", "kde", {}),
    ("kde pca=2 rel", "kde", {"project": "pca", "project_dim": 2, "noise_relative": True}),
    ("cka", "cka", {}),
    ("cka unbiased", "cka", {"unbiased": True}),
    ("nhsic", "nhsic", {}),
    ("nhsic unbiased", "nhsic", {"unbiased": True}),
]
CASES = ("gauss", "indep", "mixture", "patterns")
DIMS = (2, 16, 64)
SAMPLES = (500, 2000)
SEEDS = (0, 1, 2)
TARGET = 2.0  # nats of the Gaussian channels
#: recon at d = 64 (item 4 of the audit): decoder settings × probe sizes, two seeds each
RECON_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("default (hidden 256, lr 1e-3, batch 128)", {}),
    ("hidden=0 batch_size=512 patience=30", {"hidden": 0, "batch_size": 512, "patience": 30}),
    ("hidden=1024 lr=1e-4 patience=30", {"hidden": 1024, "lr": 1e-4, "patience": 30}),
]
RECON_SAMPLES = (2000, 8000, 32000)


# -- closed-form cases ------------------------------------------------------------------------

def _gen(*key: int) -> torch.Generator:
    seed = 0
    for k in key:
        seed = seed * 1_000_003 + int(k) + 1
    return torch.Generator().manual_seed(seed % (2 ** 62))


def gaussian_channel(d: int, total: float = TARGET) -> torch.Tensor:
    """A = c·G/√d with ½·log det(I + A·Aᵀ) = ``total`` (bisection on c); G fixed per d."""
    g = torch.randn(d, d, generator=_gen(7, d), dtype=torch.float64) / math.sqrt(d)
    eye = torch.eye(d, dtype=torch.float64)
    lo, hi = 0.0, 1e3
    for _ in range(200):
        c = 0.5 * (lo + hi)
        value = 0.5 * float(torch.logdet(eye + c * c * g @ g.T))
        lo, hi = (c, hi) if value < total else (lo, c)
    return c * g


def orthant_entropy(cov: torch.Tensor) -> float:
    """H(Y) of Y = quadrant of (T_1, T_2) for zero-mean Gaussian T (Sheppard's formula)."""
    r = float(cov[0, 1] / math.sqrt(float(cov[0, 0] * cov[1, 1])))
    same = 0.25 + math.asin(r) / (2 * math.pi)
    p = [same, same, 0.5 - same, 0.5 - same]
    return -sum(q * math.log(q) for q in p if q > 0)


def mixture_means(d: int, k: int = 4, radius: float = 2.0) -> torch.Tensor:
    mu = torch.zeros(k, d, dtype=torch.float64)
    angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    mu[:, 0], mu[:, 1] = radius * angle.cos(), radius * angle.sin()
    return mu


def mixture_mi(draws: int = 400_000) -> float:
    """I(T;Y) of the 4-class mixture by Monte Carlo with the exact density (2-d suffices: the
    other coordinates are noise independent of Y)."""
    mu = mixture_means(2)
    g = _gen(11)
    y = torch.randint(0, 4, (draws,), generator=g)
    t = mu[y] + torch.randn(draws, 2, generator=g, dtype=torch.float64)
    logp = -0.5 * ((t[:, None, :] - mu[None]) ** 2).sum(-1)  # log N(t; μ_k, I) + const
    cond = logp.gather(1, y[:, None]).squeeze(1)
    marginal = torch.logsumexp(logp, 1) - math.log(4)
    return float((cond - marginal).mean())


def make_case(case: str, d: int, n: int, seed: int, cache: dict[str, Any]) -> dict[str, Any]:
    """x, t, y and the true I(X;T), I(T;Y) (nats) of one case."""
    g = _gen(CASES.index(case), d, n, seed)
    if case == "gauss":
        a = gaussian_channel(d)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        t = x @ a.T + torch.randn(n, d, generator=g, dtype=torch.float64)
        y = (t[:, 0] > 0).long() + 2 * (t[:, 1] > 0).long()
        cov = a @ a.T + torch.eye(d, dtype=torch.float64)
        return {"x": x, "t": t, "y": y, "i_xt": TARGET, "i_ty": orthant_entropy(cov)}
    if case == "indep":
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        t = torch.randn(n, d, generator=g, dtype=torch.float64)
        return {"x": x, "t": t, "y": torch.randint(0, 4, (n,), generator=g), "i_xt": 0.0,
                "i_ty": 0.0}
    if case == "mixture":
        if "mixture" not in cache:
            cache["mixture"] = mixture_mi()
        y = torch.randint(0, 4, (n,), generator=g)
        t = mixture_means(d)[y] + torch.randn(n, d, generator=g, dtype=torch.float64)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        return {"x": x, "t": t, "y": y, "i_xt": 0.0, "i_ty": cache["mixture"]}
    if case == "patterns":
        codes = torch.randn(16, d, generator=_gen(13, d), dtype=torch.float64)
        w = torch.randn(d, d, generator=_gen(17, d), dtype=torch.float64) / math.sqrt(d)
        ids = (torch.arange(n) % 16)[torch.randperm(n, generator=g)]
        x = codes[ids]
        return {"x": x, "t": 3.0 * torch.tanh(x @ w.T), "y": ids % 2, "i_xt": math.log(16),
                "i_ty": math.log(2)}
    raise ValueError(case)


# -- running ----------------------------------------------------------------------------------

def run_estimate(name: str, settings: dict[str, Any], data: dict[str, Any], seed: int
                 ) -> dict[str, Any]:
    est = get("mi_estimator", name).create(**settings)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = est.estimate(data["t"], data["x"], data["y"], seed=seed)
    return {"i_xt": out.i_xt, "i_ty": out.i_ty, "unit": out.unit,
            "seconds": time.perf_counter() - t0,
            "saturated_xt": bool(out.details.get("saturated_xt")),
            "saturated_ty": bool(out.details.get("saturated_ty")),
            "warnings": sum(issubclass(w.category, RuntimeWarning) for w in caught)}


def run_audit(dims, samples, seeds, log) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cache: dict[str, Any] = {}
    for case in CASES:
        for d in dims:
            for n in samples:
                for seed in seeds:
                    data = make_case(case, d, n, seed, cache)
                    for label, name, settings in ESTIMATORS:
                        out = run_estimate(name, settings, data, seed)
                        rows.append({"case": case, "d": d, "n": n, "seed": seed,
                                     "estimator": label, "true_xt": data["i_xt"],
                                     "true_ty": data["i_ty"], **out})
                    log(f"{case} d={d} n={n} seed={seed}: "
                        + ", ".join(f"{r['estimator']} {r['i_xt']:.3g}/{r['i_ty']:.3g}"
                                    for r in rows[-len(ESTIMATORS):]))
    return rows


def diagonal_channel(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T_j = ρ·X_j + √(1−ρ²)·ε_j with Σ_j −½·log(1−ρ²) = TARGET: recon's own best case (its
    per-dimension decoder is exact in the population here)."""
    rho = math.sqrt(1.0 - math.exp(-2.0 * TARGET / d))
    g = _gen(99, n, seed)
    x = torch.randn(n, d, generator=g)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * torch.randn(n, d, generator=g)


def run_recon(samples, seeds, log) -> list[dict[str, Any]]:
    rows = []
    for n in samples:
        for label, settings in RECON_SETTINGS:
            for seed in seeds:
                x, t = diagonal_channel(n, 64, seed)
                data = {"x": x, "t": t, "y": (t[:, 0] > 0).long()}
                out = run_estimate("recon", settings, data, seed)
                rows.append({"n": n, "settings": label, "seed": seed, **out})
                log(f"recon d=64 n={n} {label} seed={seed}: {out['i_xt']:.3f} "
                    f"({out['seconds']:.0f} s)")
    return rows


# -- report -----------------------------------------------------------------------------------

def _cell(values: list[float], truth: float, unit: str, flagged: int) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    text = (f"{mean - truth:+.2f} ± {sd:.2f}" if unit == "nats" else f"{mean:.3g} ± {sd:.2g}")
    return text + (f" ⚑{flagged}" if flagged else "")


def _table(rows: list[dict[str, Any]], key: str, dims, samples) -> str:
    cols = [(d, n) for d in dims for n in samples]
    lines = ["| estimator | case | " + " | ".join(f"d={d} N={n}" for d, n in cols) + " |",
             "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for label, _, _ in ESTIMATORS:
        for case in CASES:
            cells = []
            for d, n in cols:
                sel = [r for r in rows if (r["estimator"], r["case"], r["d"], r["n"])
                       == (label, case, d, n)]
                if not sel:
                    cells.append("")
                    continue
                flagged = sum(r[f"saturated_{key[2:]}"] for r in sel)
                cells.append(_cell([r[key] for r in sel], sel[0][f"true_{key[2:]}"],
                                   sel[0]["unit"], flagged))
            lines.append(f"| {label} | {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _truths(rows: list[dict[str, Any]], dims) -> str:
    lines = ["| case | quantity | " + " | ".join(f"d={d}" for d in dims) + " |",
             "| --- | --- | " + " | ".join("---" for _ in dims) + " |"]
    for case in CASES:
        for key, label in (("true_xt", "I(X;T)"), ("true_ty", "I(T;Y)")):
            cells = []
            for d in dims:
                sel = [r for r in rows if r["case"] == case and r["d"] == d]
                cells.append(f"{sel[0][key]:.3f}" if sel else "")
            lines.append(f"| {case} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seconds(rows: list[dict[str, Any]], dims, samples) -> str:
    lines = ["| estimator | " + " | ".join(f"d={d} N={n}" for d in dims for n in samples)
             + " |", "| --- | " + " | ".join("---" for _ in dims for _ in samples) + " |"]
    for label, _, _ in ESTIMATORS:
        cells = []
        for d in dims:
            for n in samples:
                sel = [r["seconds"] for r in rows
                       if (r["estimator"], r["d"], r["n"]) == (label, d, n)]
                cells.append(f"{statistics.fmean(sel):.2f}" if sel else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _recon_table(rows: list[dict[str, Any]]) -> str:
    samples = sorted({r["n"] for r in rows})
    lines = ["| recon settings | " + " | ".join(f"N={n}" for n in samples) + " |",
             "| --- | " + " | ".join("---" for _ in samples) + " |"]
    for label, _ in RECON_SETTINGS:
        cells = []
        for n in samples:
            sel = [r for r in rows if r["settings"] == label and r["n"] == n]
            if not sel:
                cells.append("")
                continue
            vals = ", ".join(f"{r['i_xt']:.2f}" for r in sel)
            secs = statistics.fmean(r["seconds"] for r in sel)
            cells.append(f"{vals} ({secs:.0f} s)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(raw: dict[str, Any]) -> str:
    meta, rows = raw["meta"], raw["rows"]
    dims, samples = meta["dims"], meta["samples"]
    parts = [
        "# MI estimator audit",
        "",
        f"Made by `{meta['command']}` on {meta['date']} ({meta['machine']}; kdbench "
        f"{meta['git']}, torch {meta['torch']}; {meta['minutes']:.0f} min of CPU, one "
        f"thread). Raw figures: `{meta['raw']}`; re-render with `python benchmarks/mi_audit.py "
        f"--render {meta['raw']} --out docs/mi-audit.md`.",
        "",
        "The cases and their closed forms are in the module docstring of "
        "`benchmarks/mi_audit.py`. Nats estimators: **bias ± sd** = mean over the seeds of "
        "(estimate − truth) ± their standard deviation; dependence scores (`cka`, `nhsic`; no "
        "unit): **value ± sd** (their truth is 0 only in the `indep` case). ⚑k: the "
        "estimator's regime rule flagged k of the 3 seeds (a warning in use; see the "
        "estimator's docstring). `recon` and `infonce` run their defaults; "
        "`pca=2`: `project=pca project_dim=2`; `rel`: `noise_relative=true`.",
        "",
        "## True values (nats)",
        "",
        _truths(rows, dims),
        "",
        "## I(X;T)",
        "",
        _table(rows, "i_xt", dims, samples),
        "",
        "## I(T;Y)",
        "",
        _table(rows, "i_ty", dims, samples),
        "",
        "## Seconds per estimate (mean over cases and seeds, one CPU thread)",
        "",
        _seconds(rows, dims, samples),
        "",
    ]
    if raw.get("recon"):
        parts += [
            "## `recon` at d = 64: how many samples it needs",
            "",
            f"Diagonal Gaussian channel, I(X;T) = {TARGET:.1f} nats (the per-dimension decoder "
            "is exact in the population here), two seeds per cell (estimates, mean seconds "
            "per estimate).",
            "",
            _recon_table(raw["recon"]),
            "",
        ]
    guide = GUIDE.read_text()
    parts += [guide[guide.index("-->") + 3:].strip(), ""]
    return "\n".join(parts)


#: Hand-written reading of the tables (findings, "when to use which", the decision rule),
#: appended to the report; its figures quote the committed run.
GUIDE = Path(__file__).with_name("mi_audit_guide.md")


def dump(raw: dict[str, Any]) -> str:
    """JSON with one row per line and floats to 7 significant digits: small and diffable."""
    def short(row: dict[str, Any]) -> dict[str, Any]:
        return {k: float(f"{v:.7g}") if isinstance(v, float) else v for k, v in row.items()}

    lines = ['{"meta": ' + json.dumps(raw["meta"]) + ',']
    for key in ("rows", "recon"):
        body = ",\n".join("  " + json.dumps(short(r)) for r in raw[key])
        lines.append(f'"{key}": [\n{body}\n]' + ("," if key == "rows" else ""))
    return "\n".join(lines) + "}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/mi-audit.md")
    ap.add_argument("--raw", default="docs/mi-audit.json")
    ap.add_argument("--render", metavar="RAW_JSON", help="re-render a saved run, no estimates")
    ap.add_argument("--quick", action="store_true", help="d 2 and 16, N 500, one seed")
    ap.add_argument("--no-recon", action="store_true", help="skip the recon d = 64 part")
    args = ap.parse_args()
    if args.render:
        raw = json.loads(Path(args.render).read_text())
    else:
        dims, samples, seeds = ((2, 16), (500,), (0,)) if args.quick else (DIMS, SAMPLES, SEEDS)
        t0 = time.perf_counter()

        def log(msg: str) -> None:
            print(f"[{time.perf_counter() - t0:7.0f} s] {msg}", flush=True)

        rows = run_audit(dims, samples, seeds, log)
        recon = [] if args.no_recon or args.quick else run_recon(RECON_SAMPLES, (0, 1), log)
        try:
            git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            git = "unknown"
        raw = {"meta": {"command": "OMP_NUM_THREADS=1 python benchmarks/mi_audit.py"
                                   + (" --quick" if args.quick else ""),
                        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor()
                        or platform.machine(), "git": git, "torch": torch.__version__,
                        "minutes": (time.perf_counter() - t0) / 60, "dims": list(dims),
                        "samples": list(samples), "seeds": list(seeds), "raw": args.raw},
               "rows": rows, "recon": recon}
        Path(args.raw).parent.mkdir(parents=True, exist_ok=True)
        Path(args.raw).write_text(dump(raw))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(raw))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
