"""Real digits: how much noise SignGD, Adam and GD tolerate (``docs/digits.md``).

The binary task 3 vs 8 of scikit-learn's bundled 8x8 digits, each image the signal
patch and a Gaussian noise patch of growing level (sparse, as in the data model, and
dense), trained with SignGD, Adam and GD on the same two-layer transformer, from the
same data, split and initial weights (:mod:`simulator.digits`). Optimizers are
compared where they reach the same training loss (the first recorded step with train
loss <= 0.05, the sweep runner's ``match_train_loss``), so a sign method is not judged
on a different stage of training than GD.

Prints a table of held-out accuracy and loss per optimizer and noise level, and the
noise level at which each optimizer falls to chance; saves ``digits.png`` in ``--out``,
which is also the sweep's directory (``results.csv``, one row per run; resumable). Full run: about 2.5 minutes on 2 cores (3.1 minutes
of CPU time); ``--quick`` (what the test suite runs): about 10 seconds.

    python examples/digits.py [--quick] [--out DIR] [--workers N]
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

# one BLAS thread per process: the points run in parallel processes, and the small
# matrix products of one step gain nothing from threads (set before numpy loads)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from _common import parser, pyplot, save_figure  # noqa: E402

import numpy as np  # noqa: E402

from simulator import SimulationConfig
from simulator.config import ConfigError
from simulator.digits import DigitsData, DigitsUnavailableError, digits_config, load_digit_images
from workflows.sweep import expand, run_sweep

OPTIMIZERS = {            # the same model and budget; GD needs a far larger step
    "signgd": {"eta": 2e-3},
    "adam": {"eta": 2e-3},
    "gd": {"eta": 2.0},
}
MODEL = SimulationConfig(m_k=10, m_v=10, sigma_0=0.01, steps=500, record_every=4)
"""``sigma_0 = 0.01``: initial attention scores ``sigma_0^2 sigma_p^2 k sqrt(m_k)`` (``k``
noise coordinates) stay below 1 up to ``sigma_p ~ 10`` (sparse) and ``~ 2`` (dense).
``steps = 500`` reaches train loss 0.05 at zero noise under SignGD (about step 300) and
GD (300-450); Adam ends at 0.06 and is read at its last step."""
TARGET_LOSS = 0.05
FULL = {"data": DigitsData(classes=(3, 8), n_train=100, n_test=200), "seeds": 3,
        "levels": {"sparse": [1.0, 2.0, 4.0, 8.0, 16.0], "dense": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}}
QUICK = {"data": DigitsData(classes=(3, 8), n_train=40, n_test=100), "seeds": 2,
         "levels": {"sparse": [3.0], "dense": [0.3]}, "steps": 200}


def points(spec, steps: int) -> list:
    """The sweep points: every (optimizer, noise kind, level) as one digits config,
    its seeds one batch (``data='digits'`` in the config; :mod:`workflows.sweep`)."""
    data = spec["data"]
    base = digits_config(data, MODEL.replace(n_seeds=spec["seeds"], steps=steps))
    entries = [{"optimizer": opt, "noise": "none", "sigma_p": 0.0, **OPTIMIZERS[opt]}
               for opt in OPTIMIZERS]
    entries += [{"optimizer": opt, "noise": kind, "sigma_p": level, **OPTIMIZERS[opt],
                 "d": data.replace(noise=kind).d}
                for kind in spec["levels"] for level in spec["levels"][kind] for opt in OPTIMIZERS]
    return expand(base, [entries], match_train_loss=TARGET_LOSS)


def table_rows(sweep_rows) -> list[dict]:
    """The example's table from the sweep's rows: metrics at the matched training
    loss, or at the final step where the target was not reached."""
    rows = []
    for r in sweep_rows:
        reached = not math.isnan(r["matched_step"])
        rows.append({
            "optimizer": r["optimizer"], "noise": r["noise"] if r["sigma_p"] > 0 else "zero",
            "sigma_p": r["sigma_p"], "seed": r["seed"], "reached_target": reached,
            "step": r["matched_step"] if reached else r["steps"],
            "test_accuracy": 1.0 - (r["matched_test_error"] if reached else r["final_test_error"]),
            "test_loss": r["matched_test_loss"] if reached else r["final_test_loss"],
            "final_test_accuracy": 1.0 - r["final_test_error"],
            "final_test_loss": r["final_test_loss"],
            "final_train_loss": r["final_train_loss"], "seconds": r["point_seconds"]})
    return rows


def chance_band(n_test: int, seeds: int) -> float:
    """Accuracy below which a seed-mean is indistinguishable from chance: 1/2 plus two
    standard deviations of the mean accuracy of a coin, ``0.5 / sqrt(n_test seeds)``."""
    return 0.5 + 2 * 0.5 / math.sqrt(n_test * seeds)


def crossing(levels: np.ndarray, acc: np.ndarray, threshold: float) -> float | None:
    """The noise level where the seed-mean accuracy ``acc`` (P,) first falls to
    ``threshold``, interpolated linearly in ``log sigma_p`` between grid levels
    (linearly from 0); None if it stays above within the sweep."""
    below = np.flatnonzero(acc <= threshold)
    if below.size == 0:
        return None
    k = int(below[0])
    if k == 0:
        return float(levels[0])
    lo, hi, a_lo, a_hi = levels[k - 1], levels[k], acc[k - 1], acc[k]
    frac = (a_lo - threshold) / (a_lo - a_hi)
    if lo == 0:
        return float(frac * hi)
    return float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))


def summarize(rows, kinds, band):
    """``{(kind, optimizer): (levels, acc (P, S), loss (P, S))}`` and, per curve, the
    noise levels where it falls halfway to chance and to the chance band."""
    out, chance = {}, {}
    for kind in kinds:
        for opt in OPTIMIZERS:
            sel = [r for r in rows if r["optimizer"] == opt and r["noise"] in (kind, "zero")]
            levels = sorted({r["sigma_p"] for r in sel})
            acc = np.array([[r["test_accuracy"] for r in sel if r["sigma_p"] == v] for v in levels])
            loss = np.array([[r["test_loss"] for r in sel if r["sigma_p"] == v] for v in levels])
            out[kind, opt] = (np.array(levels), acc, loss)
            mean = acc.mean(1)
            halfway = 0.5 + 0.5 * (mean[0] - 0.5)          # mean[0]: zero noise
            chance[kind, opt] = (crossing(out[kind, opt][0], mean, halfway),
                                 crossing(out[kind, opt][0], mean, band))
    return out, chance


def plot(curves, kinds, band, title, data):
    plt = pyplot()
    fig, ax = plt.subplots(len(kinds), 2, figsize=(11, 4.2 * len(kinds)), squeeze=False,
                           constrained_layout=True)
    colors = {"signgd": "tab:red", "adam": "tab:orange", "gd": "tab:blue"}
    for row, kind in enumerate(kinds):
        for col, (name, idx) in enumerate((("test accuracy", 1), ("test loss", 2))):
            a = ax[row, col]
            for opt in OPTIMIZERS:
                levels, *vals = curves[kind, opt]
                v = vals[idx - 1]                                 # (P, S)
                a.plot(levels, v.mean(1), "o-", color=colors[opt], label=f"{opt} (seed mean)")
                a.fill_between(levels, v.min(1), v.max(1), color=colors[opt], alpha=0.2, lw=0)
            nonzero = levels[levels > 0]
            a.set_xscale("symlog", linthresh=nonzero.min() if nonzero.size else 1.0)
            a.set_xlim(0, levels.max() * 1.2)
            if col == 0:
                a.axhline(0.5, color="gray", lw=0.8)
                a.axhspan(0.5, band, color="gray", alpha=0.15, lw=0, label="chance band")
                a.set_ylim(0.4, 1.01)
            else:
                a.axhline(math.log(2), color="gray", lw=0.8, ls="--", label="log 2")
            per = data.s if kind == "sparse" else data.replace(noise="dense").noise_dim
            a.set(xlabel=rf"noise level $\sigma_p$ ({kind} noise on {per} coordinates: "
                         rf"$\|\xi\|_2 \approx {math.sqrt(per):.3g}\,\sigma_p$)", ylabel=name,
                  title=f"({'ab'[col] if row == 0 else 'cd'[col]}) {name}, {kind} noise")
            a.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def main(argv=None) -> dict:
    p = parser("digits", "SignGD, Adam and GD on noisy real digits: test accuracy and loss "
                         "against the noise level.")
    args = p.parse_args(argv)
    spec = QUICK if args.quick else FULL
    data, seeds, steps = spec["data"], spec["seeds"], spec.get("steps", MODEL.steps)
    kinds = list(spec["levels"])
    load_digit_images()                         # fail early, in one line, without the extra
    sweep_points = points(spec, steps)
    start = time.perf_counter()
    out = Path(args.out)
    result = run_sweep(sweep_points, out, workers=args.workers,
                       match_train_loss=TARGET_LOSS, progress=False)
    if result.failed:
        raise ConfigError(next(iter(result.failed.values())))
    rows = table_rows(result.rows)
    seconds = time.perf_counter() - start
    tasks = sweep_points
    band = chance_band(data.n_test, seeds)
    curves, chance = summarize(rows, kinds, band)
    title = (f"digits {data.classes[0]} vs {data.classes[1]}: n_train={data.n_train}, "
             f"n_test={data.n_test} held out, ||x_1||={data.image_norm:g}; "
             f"m_k=m_v={MODEL.m_k}, sigma_0={MODEL.sigma_0:g}\nmetrics at train loss <= "
             f"{TARGET_LOSS:g} (first of {steps} steps); eta: "
             + ", ".join(f"{k} {v['eta']:g}" for k, v in OPTIMIZERS.items())
             + f"; {seeds} seeds (band: min-max)")
    fig_path = save_figure(plot(curves, kinds, band, title, data), out / "digits.png")

    print(f"digits {data.classes[0]} vs {data.classes[1]}, {data.n_train} train / {data.n_test} "
          f"held-out images, {seeds} seeds, {len(tasks)} points in {seconds:.0f}s")
    print(f"held-out accuracy (seed mean) at the first step with train loss <= {TARGET_LOSS:g}"
          " (* = not reached, final step):")
    for kind in kinds:
        levels = curves[kind, "signgd"][0]
        print(f"  {kind:6s} sigma_p " + " ".join(f"{v:>7g}" for v in levels))
        for opt in OPTIMIZERS:
            acc = curves[kind, opt][1].mean(1)
            miss = [not all(r["reached_target"] for r in rows if r["optimizer"] == opt
                            and r["noise"] in (kind, "zero") and r["sigma_p"] == v) for v in levels]
            print(f"  {opt:>14s} " + " ".join(f"{a:>6.3f}{'*' if m else ' '}" for a, m in zip(acc, miss)))
    print(f"noise level sigma_p where the seed-mean accuracy falls halfway to 1/2 / to the "
          f"chance band (<= {band:.3f}), interpolated in log sigma_p:")
    for kind in kinds:
        top = max(spec["levels"][kind])
        fmt = lambda v: f"> {top:g}" if v is None else f"{v:.3g}"   # noqa: E731
        parts = [f"{opt} {fmt(chance[kind, opt][0])} / {fmt(chance[kind, opt][1])}"
                 for opt in OPTIMIZERS]
        print(f"  {kind:6s} " + ", ".join(parts))
    print(f"saved {fig_path} and {out / 'results.csv'}")
    zero = {opt: float(curves[kinds[0], opt][1][0].mean()) for opt in OPTIMIZERS}
    return {"rows": rows, "chance": chance, "zero_noise_accuracy": zero, "band": band,
            "figure": str(fig_path), "seconds": seconds}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (DigitsUnavailableError, ConfigError) as exc:      # one line, no traceback
        sys.exit(f"python examples/digits.py: error: {exc}")
