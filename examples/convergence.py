"""Claim 1 (and 3): how fast SignGD, Adam and GD drive the training loss down.

``docs/theory.md`` section 7, claim 1: under SignGD the training loss falls fast, at a
linear rate (``log L`` linear in ``t``) once value noise dominates, because every
step adds ``2 eta ||xi_i||_1`` to each sample's value noise whatever ``l'_i`` is.
GD's step shrinks with the gradient, so once samples are fit its loss falls like
``1/t`` (logistic loss); Adam (0.9, 0.999) sits in between: sign-like early, but its
second moment remembers early, larger gradients, so its late steps shrink and the
rate is sublinear (claim 5).

All three train the built-in main job (same data, same initial weights). The sign
methods use the built-in ``eta = 5e-5``. GD's ``eta = 0.5`` is large for this
problem: far below it GD is slower still, and GD with any ``eta`` stays sublinear
(measured: ``eta = 0.05 ... 5`` all end on a ``1/t`` tail). Training loss is plotted
against steps and against wall time (the recorded ``wall_time``, which includes the
cost of recording every ``record_every`` steps).

Run::

    python examples/convergence.py            # 6000 steps, about 30 s on 2 cores
    python examples/convergence.py --quick    # 1500 steps, seconds

A correct run prints, per optimizer, the steps and seconds it took to reach training
loss ``1e-1``, ``1e-2`` and ``1e-3``, the time per step, the final losses and the
loss shape (rate ratio: mean ``-d log L / dt`` over the last quarter of training
over that of the second quarter; about 1 for a linear rate, well below for a
sublinear one), then the step from which SignGD's loss stays below GD's. Measured::

    signgd   950 / 0.56  1990 / 1.32  3030 / 2.18  ... 9.436e-07  0.6923  linear (rate ratio 1.10)
    adam    1260 / 0.93  4390 / 3.53        never  ... 4.123e-03  0.6911  sublinear (rate ratio 0.69)
    gd        40 / 0.02   180 / 0.09  1850 / 0.97  ... 3.107e-04  0.6940  sublinear (rate ratio 0.42)
    SignGD's loss is below GD's from step 3290 on

GD with this large step fits the data first; SignGD's linear rate overtakes it
(and would overtake GD at any fixed ``eta``, whose late loss falls like
``1 / (eta t)``). Every final test loss stays near ``log 2`` (claim 2). Figure:
``examples/output/convergence/convergence.png``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from _common import parser, pyplot, save_figure

SETTINGS = (("signgd", {}), ("adam", {"beta1": 0.9, "beta2": 0.999}), ("gd", {"eta": 0.5}))
LEVELS = (1e-1, 1e-2, 1e-3)


def first_reach(h, level: float) -> tuple[float, float]:
    """Step and wall time of the first record with train loss ``<= level`` (NaN if never)."""
    hit = np.flatnonzero(h["train_loss"][:, 0] <= level)
    if hit.size == 0:
        return math.nan, math.nan
    return float(h.steps[hit[0]]), float(h["wall_time"][hit[0]])


def rate_ratio(h) -> float:
    """Mean ``-d log L / dt`` over the last quarter over that of the second quarter."""
    t = h.steps.astype(float)
    logL = np.log(np.maximum(h["train_loss"][:, 0], np.finfo(float).tiny))
    k = [int(np.searchsorted(t, f * t[-1])) for f in (0.25, 0.5, 0.75)]
    q2 = (logL[k[0]] - logL[k[1]]) / (t[k[1]] - t[k[0]])
    q4 = (logL[k[2]] - logL[-1]) / (t[-1] - t[k[2]])
    return float(q4 / q2) if q2 > 0 else math.nan


def plot(results, path):
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    fig.subplots_adjust(left=0.05, right=0.98, top=0.86, bottom=0.13, wspace=0.25)
    for res in results:
        h = res["history"]
        L = h["train_loss"][:, 0]
        lab = f"{res['label']} ({res['shape']})"
        ax[0].semilogy(h.steps, L, label=lab)
        ax[1].semilogy(h["wall_time"], L, label=lab)
        ax[2].loglog(h.steps[1:], L[1:], label=lab)
    for level in LEVELS:
        for a in ax:
            a.axhline(level, color="gray", lw=0.5, ls=":")
    ax[0].set(title="training loss vs step (straight = linear rate)", xlabel="step")
    ax[1].set(title="training loss vs wall time", xlabel="seconds")
    ax[2].set(title="log-log (straight = sublinear, power law)", xlabel="step")
    ax[0].legend()
    cfg = results[0]["history"].config
    fig.suptitle(f"Convergence on the built-in job (n={cfg.n}, d={cfg.d}, s={cfg.s}, "
                 f"||mu||={cfg.mu_norm:g}); SignGD/Adam eta={cfg.eta:g}, GD eta=0.5")
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    p = parser("convergence", "Training loss against steps and wall time: SignGD, Adam, GD.")
    args = p.parse_args(argv)
    from simulator import SimulationConfig, run

    out = Path(args.out)
    base = SimulationConfig(record_every=10, steps=1500 if args.quick else 6000,
                            n_test=100 if args.quick else 500)
    print(f"convergence: {base.steps} steps of the built-in job (full engine, one seed)")
    results = []
    for label, changes in SETTINGS:
        h = run(base.replace(optimizer=label, **changes))
        results.append({"label": label, "history": h, "ratio": rate_ratio(h)})
        results[-1]["shape"] = "linear" if results[-1]["ratio"] >= 0.75 else "sublinear"
    head = "  ".join(f"loss<={lv:g}: step / s" for lv in LEVELS)
    print(f"\n{'optimizer':<8s} {head}   ms/step  final train  final test  shape")
    for res in results:
        h = res["history"]
        res["reach"] = {lv: first_reach(h, lv) for lv in LEVELS}
        cells = "  ".join(f"{st:7.0f} / {sec:5.2f}" if np.isfinite(st) else f"{'never':>15s}"
                          for st, sec in res["reach"].values())
        res["ms_per_step"] = 1e3 * float(h["wall_time"][-1]) / max(int(h.steps[-1]), 1)
        res["final_train_loss"] = float(h["train_loss"][-1, 0])
        res["final_test_loss"] = float(h["test_loss"][-1, 0])
        print(f"{res['label']:<8s} {cells}   {res['ms_per_step']:7.3f}  {res['final_train_loss']:11.3e}"
              f"  {res['final_test_loss']:10.4f}  {res['shape']} (rate ratio {res['ratio']:.2f})")
    sign, gd = results[0]["history"]["train_loss"][:, 0], results[2]["history"]["train_loss"][:, 0]
    behind = np.flatnonzero(sign >= gd)
    cross = (float(results[0]["history"].steps[behind[-1] + 1])
             if behind.size and behind[-1] + 1 < sign.size else math.nan)
    print(f"\nSignGD's loss is below GD's from step {cross:.0f} on" if np.isfinite(cross)
          else "\nSignGD's loss does not end below GD's within these steps")
    fig = plot(results, out / "convergence.png")
    print(f"\nwrote {fig}")
    return ({r["label"]: {k: v for k, v in r.items() if k != "history"} for r in results}
            | {"signgd_below_gd_from": cross, "figures": [fig]})


if __name__ == "__main__":
    main()
    sys.exit(0)
