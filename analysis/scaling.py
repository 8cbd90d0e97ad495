"""Scaling laws across a sweep: seeds aggregated per value of x, a log-log slope with
its interval, and the exponent the theory predicts beside it.

For a sweep over one field ``x`` (say ``eta``) and a per-run quantity ``y`` (say the
Stage II time ``T2``), :func:`scaling_study` computes

* per value of ``x``: the seeds that reached ``y`` (finite values), their mean,
  standard deviation (``ddof=1``) and a 95% Student-t interval of the mean,
  ``mean +- t_{0.975, k-1} std / sqrt(k)``;
* the slope ``b`` of ``log(mean y) = a + b log x`` (least squares over the values of
  x), with a 95% interval from a **seed bootstrap**: the seeds at each value of x are
  resampled with replacement, independently per value (``n_boot`` resamples from a
  generator of fixed ``seed``, so the interval is reproducible), and the interval is
  the 2.5% and 97.5% percentiles of the refitted slopes. It measures the seed noise of
  the means. The regression's standard error (``slope_se``, from the scatter of the
  means about the line) is reported beside it but not used for the verdict: with
  three or four values of x it has one or two degrees of freedom;
* the exponent the theory predicts (:data:`PREDICTED`) and a verdict: ``agrees`` when
  the predicted exponent lies in the interval, ``disagrees`` when not, ``not
  applicable`` when the theory predicts nothing for that ``(y, x)``.

Other fields that vary in the sweep and are not functions of x (an optimizer label,
a second grid field) split the rows into *series*, each fitted on its own; fields
that follow x (``steps`` derived from ``eta``) do not split.

:func:`scaling_study` refuses, with a one-line :class:`ScalingError`, when x does not
vary, x or a mean of y is not positive, y was never reached (NaN in every run), or
fewer than two values of x have at least ``min_seeds`` seeds with y reached.
:func:`write_scaling` writes the fits and per-x statistics as CSV and JSON and the
figure as PNG and PDF. Command line: ``python -m analysis scaling SWEEP_DIR --x eta
--y T2 [--y T4 ...]``; worked examples in ``docs/scaling.md``.

>>> study = scaling_study("sweeps/T2-eta", "eta", ["T2"])        # doctest: +SKIP
>>> study.fits[0].slope, study.fits[0].ci, study.fits[0].verdict  # doctest: +SKIP
(-1.003, (-1.06, -0.95), 'agrees')
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .tables import IDENTITY_COLUMNS, config_column_types, load_sweep

if TYPE_CHECKING:   # pragma: no cover
    import pandas

LEVEL = 0.95
N_BOOT = 2000
BOOT_SEED = 0
MIN_SEEDS = 3


class ScalingError(ValueError):
    """A sweep that cannot give the requested scaling law (the message is one line)."""


# ---------------------------------------------------------------------------
# what the theory predicts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    """The exponent of ``x`` in the theory's closed form for ``y``."""

    exponent: float
    law: str
    """The closed form, e.g. ``T2 ~ sigma_0 / (eta sqrt(s))``."""
    reference: str
    """Where it is derived (``docs/theory.md``)."""
    conditions: str
    """When it holds."""


_SEC6 = "docs/theory.md section 6"
_LAWS = {
    "T1": ("T1 ~ sigma_0 / (eta sqrt(s m_v))", f"{_SEC6}, Stage I",
           "||mu|| << ||xi||_1; visible as a power law only when T1 >> 1",
           {"sigma_0": 1.0, "eta": -1.0, "s": -0.5, "m_v": -0.5, "sigma_p": 0.0, "mu_norm": 0.0}),
    "T2": ("T2 ~ sigma_0 / (eta sqrt(s))", f"{_SEC6}, Stage II (Scaling)",
           "small steps (eta ||xi||_1 << |Qn + Kn|, so T2 >> 1), signals negligible "
           "(||mu|| << ||xi||_2), small initial scores; the exponent in s is asymptotic "
           "(||xi||_1 / ||xi||_2 concentrates for large s)",
           {"sigma_0": 1.0, "eta": -1.0, "s": -0.5, "sigma_p": 0.0, "mu_norm": 0.0}),
    "T3": ("T3 ~ sigma_0 / eta", f"{_SEC6}, Stage III (a closed form for T3)",
           "an estimate: votes settled early and T3 << T4; grows faster where Stage IV "
           "comes early",
           {"sigma_0": 1.0, "eta": -1.0, "mu_norm": 0.0, "s": 0.0, "sigma_p": 0.0}),
    "T4": ("T4 ~ 1 / (eta s sigma_p sqrt(tau m_k))", f"{_SEC6}, Stage IV (T4)",
           "T4 >> T2, small initial scores, ||mu|| << ||xi||_1, small steps; the slowest "
           "sample's ||xi_i||_1 sits further below the mean at small s",
           {"eta": -1.0, "s": -1.0, "sigma_p": -1.0, "m_k": -0.5, "sigma_0": 0.0, "mu_norm": 0.0}),
    "train_loss_rate": ("-d log L / dt ~ eta ||xi||_1 ~ eta s sigma_p",
                        "docs/theory.md section 7, claim 1",
                        "late training (softmax settled, |l'_i| ~ L), ||mu|| << ||xi||_1, "
                        "and the fit window (last quarter of the run) in that phase",
                        {"eta": 1.0, "s": 1.0, "sigma_p": 1.0, "mu_norm": 0.0}),
}
PREDICTED: dict[tuple[str, str], Prediction] = {
    (y, x): Prediction(exponent, law, reference, conditions)
    for y, (law, reference, conditions, exponents) in _LAWS.items()
    for x, exponent in exponents.items()
}
"""``(y, x) -> Prediction``: the theory's exponent of x in y, other fields fixed."""


def predicted_exponent(y: str, x: str) -> Prediction | None:
    """The theory's exponent of ``x`` in ``y`` (``None``: no prediction)."""
    return PREDICTED.get((y, x))


# ---------------------------------------------------------------------------
# statistics on arrays
# ---------------------------------------------------------------------------

@dataclass
class XStats:
    """The seeds of one value of x: how many reached y, and their statistics."""

    x: float
    n_runs: int
    n: int
    """Runs with y reached (finite)."""
    mean: float
    std: float
    ci_low: float
    ci_high: float
    median: float
    used: bool
    """In the fit (at least ``min_seeds`` seeds reached y)."""


def x_stats(x: float, values: np.ndarray, *, level: float = LEVEL, min_seeds: int = MIN_SEEDS) -> XStats:
    """Mean, standard deviation and a Student-t interval of the mean of the finite values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    ok = values[np.isfinite(values)]
    k = ok.size
    mean = float(ok.mean()) if k else math.nan
    std = float(ok.std(ddof=1)) if k > 1 else math.nan
    half = float(stats.t.ppf(0.5 + level / 2, k - 1) * std / math.sqrt(k)) if k > 1 else math.nan
    return XStats(float(x), int(values.size), int(k), mean, std, mean - half, mean + half,
                  float(np.median(ok)) if k else math.nan, bool(k >= min_seeds))


@dataclass
class SlopeFit:
    """A log-log least-squares fit with a seed-bootstrap interval of its slope."""

    slope: float
    intercept: float
    ci_low: float
    ci_high: float
    slope_se: float
    """The regression's standard error (NaN with two values of x)."""
    n_x: int
    n_boot: int
    boot_seed: int
    level: float
    boot_dropped: int = 0
    """Resamples left out because a resampled mean was not positive."""

    @property
    def ci(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts of ``ly[..., k] ~ a + b lx[k]`` for every leading index."""
    dx = lx - lx.mean()
    slope = (ly - ly.mean(axis=-1, keepdims=True)) @ dx / (dx @ dx)
    return slope, ly.mean(axis=-1) - slope * lx.mean()


def fit_power_law(xs: Sequence[float], samples: Sequence[np.ndarray], *, n_boot: int = N_BOOT,
                  seed: int = BOOT_SEED, level: float = LEVEL) -> SlopeFit:
    """Fit ``mean(y) ~ A x^b`` on log-log axes, with a seed-bootstrap interval of ``b``.

    Parameters
    ----------
    xs : sequence of K positive floats
        The values of x (at least 2, distinct).
    samples : sequence of K arrays
        The finite values of y over the seeds at each x (each with a positive mean).
    n_boot, seed : int
        Bootstrap resamples and the seed of their generator.
    level : float
        Coverage of the interval.
    """
    lx = np.log(np.asarray(xs, dtype=float))                               # (K,)
    samples = [np.asarray(s, dtype=float) for s in samples]
    means = np.array([s.mean() for s in samples])                          # (K,)
    if lx.size < 2 or np.unique(lx).size < 2:
        raise ScalingError("a slope needs at least 2 distinct values of x")
    if (means <= 0).any():
        raise ScalingError("log-log needs positive means")
    ly = np.log(means)
    slope, intercept = _ols(lx, ly)
    K = lx.size
    if K > 2:
        resid = ly - (intercept + slope * lx)
        se = math.sqrt(float(resid @ resid) / (K - 2) / float(((lx - lx.mean()) ** 2).sum()))
    else:
        se = math.nan
    rng = np.random.default_rng(seed)
    boot_means = np.empty((n_boot, K))                                     # (B, K)
    for k, s in enumerate(samples):
        idx = rng.integers(0, s.size, size=(n_boot, s.size))
        boot_means[:, k] = s[idx].mean(axis=1)
    good = (boot_means > 0).all(axis=1)
    boot_slopes, _ = _ols(lx, np.log(boot_means[good]))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(boot_slopes, [tail, 100 - tail]) if boot_slopes.size else (math.nan,) * 2
    return SlopeFit(float(slope), float(intercept), float(low), float(high), se, int(K), int(n_boot),
                    int(seed), float(level), int((~good).sum()))


def verdict(prediction: Prediction | None, fit: SlopeFit) -> str:
    """``agrees`` when the predicted exponent lies in the slope's interval."""
    if prediction is None:
        return "not applicable"
    return "agrees" if fit.ci_low <= prediction.exponent <= fit.ci_high else "disagrees"


# ---------------------------------------------------------------------------
# a sweep's table
# ---------------------------------------------------------------------------

@dataclass
class Series:
    """The fit of one y over x in one series (the rows sharing ``group``)."""

    y: str
    x: str
    group: dict[str, Any]
    points: list[XStats]
    fit: SlopeFit
    prediction: Prediction | None
    verdict: str

    @property
    def name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.group.items()) or "all runs"


@dataclass
class ScalingStudy:
    """Every fit of a scaling study, with what it was computed from."""

    source: str
    x: str
    ys: list[str]
    series: list[Series] = field(default_factory=list)
    n_runs: int = 0
    min_seeds: int = MIN_SEEDS

    @property
    def fits(self) -> list[SlopeFit]:
        return [s.fit for s in self.series]


def _group_columns(table: "pandas.DataFrame", x: str) -> list[str]:
    """Config-like columns that split the rows into series: those that vary and are not
    a function of ``x`` and the columns already chosen (derived ``steps`` follows
    ``eta``; an optimizer's ``eta`` and ``beta1`` follow its ``label``)."""
    candidates = [c for c in (*IDENTITY_COLUMNS[1:], *config_column_types(), "beta1", "beta2", "eps")
                  if c in table.columns and c not in (x, "seed", "n_seeds")]
    as_text = {c: table[c].astype("string").fillna("nan") for c in dict.fromkeys(candidates)}
    out: list[str] = []
    for c, col in as_text.items():
        if col.nunique() < 2:
            continue
        key = table[x].astype("string")
        for chosen in out:
            key = key + "|" + as_text[chosen]
        if (col.groupby(key).nunique() <= 1).all():           # determined: no new series
            continue
        out.append(c)
    return out


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def scaling_table(table: "pandas.DataFrame", x: str, ys: Sequence[str], *, min_seeds: int = MIN_SEEDS,
                  n_boot: int = N_BOOT, seed: int = BOOT_SEED, level: float = LEVEL,
                  source: str = "the table") -> ScalingStudy:
    """The scaling study of ``ys`` over ``x`` from a sweep table (:func:`load_sweep`).

    Raises
    ------
    ScalingError
        One line: x or y not a numeric column, x does not vary or is not positive, y
        never reached, fewer than 2 values of x with ``min_seeds`` seeds, a mean of y
        that is not positive.
    """
    import pandas as pd

    ys = [ys] if isinstance(ys, str) else list(dict.fromkeys(ys))     # each y once, in order
    if not ys:
        raise ScalingError("give at least one y (--y T2)")
    if min_seeds < 2:
        raise ScalingError(f"min_seeds must be at least 2 (a standard deviation needs 2), got {min_seeds}")
    if n_boot < 100:
        raise ScalingError(f"n_boot must be at least 100, got {n_boot}")
    if not 0 < level < 1:
        raise ScalingError(f"level must be in (0, 1), got {level}")
    if table.empty:
        raise ScalingError(f"{source} has no runs")
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    for name, what in [(x, "x"), *((y, "y") for y in ys)]:
        if name not in table.columns:
            hint = ", ".join(c for c in numeric if table[c].nunique() > 1 and c in config_column_types()
                             and c != "seed") \
                if what == "x" else ", ".join(c for c in ("T1", "T2", "T3", "T4", "train_loss_rate",
                                                          "final_test_loss") if c in numeric)
            raise ScalingError(f"{what} {name!r} is not a column of {source} "
                               f"({'fields that vary' if what == 'x' else 'e.g.'}: {hint or 'none'})")
        if name not in numeric:
            raise ScalingError(f"{what} {name!r} is not a numeric column of {source}")
    xv = table[x].astype(float)
    if xv.isna().any():
        raise ScalingError(f"x {x} is missing (NaN) in {int(xv.isna().sum())} of {len(table)} runs")
    if xv.nunique() < 2:
        raise ScalingError(f"x {x} does not vary in {source}: every run has {x}={_show(xv.iloc[0])}")
    if (xv <= 0).any():
        raise ScalingError(f"log-log needs x > 0, but {x}={_show(xv[xv <= 0].iloc[0])} in {source}")
    for y in ys:
        if not np.isfinite(table[y].astype(float)).any():
            raise ScalingError(f"{y} was never reached: it is NaN in all {len(table)} runs of {source} "
                               "(longer runs? e.g. --derive steps=0.2/eta)")
    groups = _group_columns(table, x)
    study = ScalingStudy(source, x, list(ys), n_runs=len(table), min_seeds=min_seeds)
    keyed = table.groupby(groups, sort=False, dropna=False) if groups else [((), table)]
    for y in ys:
        for key, part in keyed:
            key = key if isinstance(key, tuple) else (key,)
            group = {g: (v.item() if hasattr(v, "item") else v) for g, v in zip(groups, key)}
            where = f"{y} in {source}" + (f" ({', '.join(f'{k}={_show(v)}' for k, v in group.items())})"
                                           if group else "")
            points = [x_stats(xk, rows[y].to_numpy(dtype=float), level=level, min_seeds=min_seeds)
                      for xk, rows in part.groupby(part[x].astype(float), sort=True)]
            used = [p for p in points if p.used]
            if len(used) < 2:
                counts = ", ".join(f"{x}={_show(p.x)}: {p.n} of {p.n_runs}" for p in points)
                raise ScalingError(f"{where}: only {len(used)} value(s) of {x} with at least {min_seeds} "
                                   f"seeds that reached {y} ({counts}); a slope needs 2")
            bad = next((p for p in used if not p.mean > 0), None)
            if bad is not None:
                raise ScalingError(f"{where}: log-log needs y > 0, but the mean of {y} is "
                                   f"{_show(bad.mean)} at {x}={_show(bad.x)}")
            samples = [part.loc[part[x].astype(float) == p.x, y].to_numpy(dtype=float) for p in used]
            fit = fit_power_law([p.x for p in used], [s[np.isfinite(s)] for s in samples],
                                n_boot=n_boot, seed=seed, level=level)
            pred = predicted_exponent(y, x)
            study.series.append(Series(y, x, group, points, fit, pred, verdict(pred, fit)))
    return study


def scaling_study(sweep_dir: str | os.PathLike, x: str, ys: Sequence[str], **options) -> ScalingStudy:
    """:func:`scaling_table` of ``SWEEP_DIR/results.csv`` (options as there)."""
    return scaling_table(load_sweep(sweep_dir), x, ys, source=str(sweep_dir), **options)


# ---------------------------------------------------------------------------
# output: table, CSV, JSON, figure
# ---------------------------------------------------------------------------

LABELS = {
    "eta": "learning rate $\\eta$",
    "sigma_0": "initial weight scale $\\sigma_0$",
    "s": "noise sparsity $s$ (coordinates per sample)",
    "sigma_p": "noise scale $\\sigma_p$",
    "mu_norm": "signal strength $\\|\\mu\\|$",
    "m_k": "query/key neurons $m_k$",
    "m_v": "value neurons $m_v$",
    "n": "training samples $n$",
    "d": "input dimension $d$",
    "T1": "$T_1$, end of Stage I (steps)",
    "T2": "$T_2$, end of Stage II (steps)",
    "T3": "$T_3$, end of Stage III (steps)",
    "T4": "$T_4$, end of Stage IV (steps)",
    "train_loss_rate": "training-loss rate $-d\\log L/dt$ (per step)",
    "final_test_loss": "final test loss (nats)",
    "matched_test_loss": "test loss at matched training loss (nats)",
    "final_train_loss": "final training loss (nats)",
    "snr": "signal-to-noise ratio $\\|\\mu\\| / (\\sigma_p \\sqrt{s})$",
}
"""Axis labels with units (a field not listed is labelled by its name)."""


def fit_rows(study: ScalingStudy) -> list[dict[str, Any]]:
    """One row per series: the fit, the prediction and the verdict."""
    rows = []
    for s in study.series:
        p = s.prediction
        rows.append({
            "y": s.y, "x": s.x, "series": s.name, "x_values": s.fit.n_x,
            "seeds": min(q.n for q in s.points if q.used),
            "slope": s.fit.slope, "ci_low": s.fit.ci_low, "ci_high": s.fit.ci_high,
            "slope_se": s.fit.slope_se, "intercept": s.fit.intercept,
            "predicted": p.exponent if p else math.nan, "verdict": s.verdict,
            "law": p.law if p else "", "reference": p.reference if p else "",
            "interval": f"{100 * s.fit.level:g}% seed bootstrap, {s.fit.n_boot} resamples, "
                        f"seed {s.fit.boot_seed}",
        })
    return rows


def point_rows(study: ScalingStudy) -> list[dict[str, Any]]:
    """One row per (series, value of x): the seed statistics."""
    return [{"y": s.y, "x": s.x, "series": s.name, **asdict(p)} for s in study.series for p in s.points]


def format_study(study: ScalingStudy) -> str:
    """The printed table: one line per fit, then the per-x statistics."""
    f = study.series[0].fit
    lines = [f"scaling with {study.x} in {study.source}: {study.n_runs} runs; slope = log-log "
             f"least squares of the seed means; interval: {100 * f.level:g}% seed bootstrap "
             f"({f.n_boot} resamples, seed {f.boot_seed})"]
    head = f"{'y':<16} {'series':<24} {'x values':>8} {'slope':>8}  {'interval':<18} {'theory':>7}  verdict"
    lines += [head]
    for r in fit_rows(study):
        interval = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        theory = f"{r['predicted']:g}" if math.isfinite(r["predicted"]) else "-"
        lines.append(f"{r['y']:<16} {r['series']:<24} {r['x_values']:>8} {r['slope']:>8.3f}  "
                     f"{interval:<18} {theory:>7}  {r['verdict']}")
    lines.append("")
    lines.append(f"{'y':<16} {'series':<24} {study.x:>10} {'seeds':>7} {'mean':>11} {'std':>10}  "
                 f"95% interval of the mean")
    for s in study.series:
        for p in s.points:
            seeds = f"{p.n}/{p.n_runs}" + ("" if p.used else "*")
            lines.append(f"{s.y:<16} {s.name:<24} {p.x:>10.4g} {seeds:>7} {p.mean:>11.5g} "
                         f"{p.std:>10.4g}  [{p.ci_low:.5g}, {p.ci_high:.5g}]")
    if any(not p.used for s in study.series for p in s.points):
        lines.append(f"* fewer than {study.min_seeds} seeds reached y: left out of the fit")
    return "\n".join(lines)


def _json_ready(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


def study_json(study: ScalingStudy) -> dict[str, Any]:
    """Everything of the study as JSON-ready data (NaN as ``null``)."""
    return _json_ready({
        "source": study.source, "x": study.x, "ys": study.ys, "runs": study.n_runs,
        "min_seeds": study.min_seeds,
        "method": {"slope": "least squares of log(mean y) on log x over the values of x",
                   "interval": "percentiles of the slopes refitted on seed-bootstrap resamples "
                               "(seeds resampled with replacement at each value of x)",
                   "per_x_interval": "Student-t interval of the mean",
                   "verdict": "agrees when the predicted exponent lies in the interval"},
        "fits": [{**row, "group": s.group, "boot_dropped": s.fit.boot_dropped,
                  "conditions": s.prediction.conditions if s.prediction else "",
                  "points": [asdict(p) for p in s.points]}
                 for row, s in zip(fit_rows(study), study.series)],
    })


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    from simulator.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_scaling_figure(study: ScalingStudy, path: str | os.PathLike) -> list[Path]:
    """One panel per y: seed means with 95% intervals, the fit, the theory line.
    Where the theory predicts nothing, the means are joined by a thin line instead of
    the fit. Writes ``path`` with suffix ``.png`` and ``.pdf``; returns both paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from simulator.io import atomic_write_with

    style = {"font.size": 16, "axes.titlesize": 17, "axes.labelsize": 17, "legend.fontsize": 12.5,
             "xtick.labelsize": 14, "ytick.labelsize": 14, "axes.spines.top": False,
             "axes.spines.right": False, "lines.linewidth": 2.2}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    with plt.rc_context(style):
        fig, axes = plt.subplots(1, len(study.ys), figsize=(7.2 * len(study.ys), 5.6), squeeze=False)
        for ax, y in zip(axes[0], study.ys):
            series = [s for s in study.series if s.y == y]
            for c, s in enumerate(series):
                color = colors[c % len(colors)]
                pts = [p for p in s.points if p.used]
                xs = np.array([p.x for p in pts])
                m = np.array([p.mean for p in pts])
                low = np.clip(m - np.array([p.ci_low for p in pts]), 0, None)
                high = np.array([p.ci_high for p in pts]) - m
                low = np.where(np.isfinite(low), np.minimum(low, 0.999 * m), 0)
                seeds = min(p.n for p in pts)
                seeds_text = f"{'>= ' if seeds < max(p.n for p in pts) else ''}{seeds} seeds"
                f = s.fit
                fitted = f"slope {f.slope:.2f} [{f.ci_low:.2f}, {f.ci_high:.2f}]"
                many = len(series) > 1
                short = ", ".join(str(v) for v in s.group.values()) if len(s.group) == 1 else s.name
                ax.errorbar(xs, m, yerr=[low, np.nan_to_num(high)], fmt="o", ms=8, capsize=5,
                            color=color, label=(f"{short}: {fitted}" if many else
                                                f"mean of {seeds_text}, 95% interval"))
                grid = np.geomspace(xs.min(), xs.max(), 50)
                if s.prediction is None:     # no law claimed: join the means, slope for reference
                    ax.plot(xs, m, "-", lw=1.2, color=color,
                            label=None if many else f"fit {fitted}, no theory")
                else:
                    ax.plot(grid, np.exp(f.intercept) * grid ** f.slope, "-", color=color,
                            label=None if many else f"fit: {fitted}")
                    b = s.prediction.exponent
                    a = np.mean(np.log(m)) - b * np.mean(np.log(xs))   # through the data's centre
                    ax.plot(grid, np.exp(a) * grid ** b, "--", color="0.35" if not many else color,
                            label=f"{short + ': ' if many else ''}theory: slope {b:g} ({s.verdict})")
            ax.set_xscale("log")
            ax.set_yscale("log")
            xs_all = sorted({p.x for s in series for p in s.points if p.used})
            ax.set_xticks(xs_all, [f"{v:g}" for v in xs_all])       # the swept values
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(LABELS.get(study.x, study.x))
            ax.set_ylabel(LABELS.get(y, y))
            ax.set_title(f"{y} against {study.x}")
            ax.legend(frameon=False, loc="best", title_fontsize=12.5,
                      title=f"mean of {seeds_text}, 95% interval" if len(series) > 1 else None)
            ax.grid(True, which="both", alpha=0.25)
        fig.tight_layout()
        path = Path(path)
        out = []
        for suffix in (".png", ".pdf"):
            target = path.with_suffix(suffix)
            atomic_write_with(target, lambda fh, fmt=suffix[1:]: fig.savefig(fh, format=fmt, dpi=150))
            out.append(target)
        plt.close(fig)
    return out


def write_scaling(study: ScalingStudy, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``scaling_<x>_<ys>.csv`` (the fits), ``..._points.csv`` (per-x statistics),
    ``.json`` (both, with the method), ``.png`` and ``.pdf`` (the figure) into ``out_dir``."""
    from simulator.io import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"scaling_{study.x}_{'_'.join(study.ys)}"
    fits = stem.with_name(stem.name + ".csv")
    points = stem.with_name(stem.name + "_points.csv")
    js = stem.with_name(stem.name + ".json")
    _write_csv(fits, fit_rows(study))
    _write_csv(points, point_rows(study))
    atomic_write_text(js, json.dumps(study_json(study), indent=1) + "\n")
    return [fits, points, js, *save_scaling_figure(study, stem)]
