"""Claim 4: sign methods need higher-quality data than GD (a phase diagram).

``docs/theory.md`` section 7, claim 4. A sign step moves every coordinate by ``eta``
whatever the gradient's size, so under SignGD (and Adam) the value signal grows by
``2 eta ||mu||`` per step while value noise grows by ``2 eta ||xi_i||_1``: at a given
training margin the test margin (the value signal) is a fraction about
``||mu|| / (||mu|| + ||xi||_1)`` of it. The sign methods generalize only when

    ||mu|| >~ E||xi||_1 = s sigma_p sqrt(2/pi)          (l1-SNR of order one).

GD moves each weight by its gradient: the signal direction collects the ``n``
samples' ``||mu||^2`` and each noise direction only its own ``||xi_i||_2^2``, so GD
generalizes when

    n ||mu||^2 >~ E||xi||_2^2 = s sigma_p^2             (sqrt(n) l2-SNR of order one).

Between the two lines (``sigma_p sqrt(s/n) < ||mu|| < s sigma_p sqrt(2/pi)``) GD
generalizes and SignGD and Adam do not. This example sweeps signal strength
``||mu||`` against noise sparsity ``s`` (``sigma_p = 1``, so both ``||xi||_1`` and
``||xi||_2^2`` grow with ``s``), with SignGD, Adam and GD, and draws both lines on
the measured test loss.

Matched training loss
---------------------
Optimizers are compared at the same training loss, not the same step: each run's
test loss and test error are read at the first recorded step where its training loss
reaches ``TARGET = 0.1`` (``--match-train-loss`` of the sweep runner; every 2nd step
is recorded). Later the training loss of the sign methods keeps falling at a linear
rate while GD's slows down, and comparing at a fixed step would mix up how far each
has fitted the data with what it has learned. Learning rates are set per point so
that every optimizer reaches the target in roughly 100-300 steps:
``eta = 3 / (600 (||mu|| + E||xi||_1))`` for SignGD and Adam (a sign step raises the
training margin by about ``2 eta (||mu|| + ||xi||_1)``), ``eta = 0.05 n m_v /
(E||xi||_2^2 + n ||mu||^2)`` for GD. With small steps the learning rate only rescales
time, so this does not favour anyone.

Engine: ``reduced`` with ``reduced_init='distribution'`` (``docs/theory.md`` section 9),
exact for disjoint supports and independent of ``s`` and ``d`` in cost
(``d = 10^9`` keeps test supports fresh). ``sigma_0`` is the default 0.005, so (claim
2) test *error* falls early for every optimizer while the test *loss* shows which
features were learned; both are plotted.

Run::

    python examples/gd_vs_signgd.py            # about 2-3 min on 2 cores
    python examples/gd_vs_signgd.py --quick    # 3 signal strengths at s = 16 (seconds)

A correct run prints a table of matched test losses per optimizer, e.g. at ``s = 16``
(boundaries ``||mu|| = 1.4`` for GD and ``12.8`` for SignGD)::

    s=16   ||mu||:  0.1   0.32  1     3.2   10    32 ...
      signgd        0.69  0.67  0.63  0.55  0.37  0.15
      gd            0.69  0.63  0.33  0.13  0.10  0.10

then the cells where GD generalizes and SignGD does not (matched test loss below
``log(2)/2``), and how often each theory line sorts the cells correctly. It writes
``phase_diagram.png`` (test loss and test error over ``(||mu||, s)`` with both lines),
``snr.png`` (the same cells over ``sqrt(n)`` l2-SNR and l1-SNR, where the lines are
axis-parallel) and ``results.csv`` (the sweep table) to ``examples/output/gd_vs_signgd/``.
The sweep is resumable: rerunning reuses finished points under ``<out>/sweep``.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict

import numpy as np

from _common import positive_int, parser, pyplot, save_figure

TARGET = 0.1                    # matched training loss
GENERALIZES = math.log(2) / 2   # matched test loss below this: generalizes
OPTIMIZERS = ("signgd", "adam", "gd")
SIGMA_P, N, M_V = 1.0, 8, 10


def xi_l1(s: float) -> float:
    """``E||xi||_1 = s sigma_p sqrt(2/pi)``."""
    return s * SIGMA_P * math.sqrt(2 / math.pi)


def xi_l2sq(s: float) -> float:
    """``E||xi||_2^2 = s sigma_p^2``."""
    return s * SIGMA_P ** 2


def sign_ratio(mu: float, s: float) -> float:
    """Sign methods: signal against memorization per step, ``||mu|| / E||xi||_1``."""
    return mu / xi_l1(s)


def gd_ratio(mu: float, s: float) -> float:
    """GD: ``n ||mu||^2 / E||xi||_2^2``."""
    return N * mu ** 2 / xi_l2sq(s)


def learning_rate(optimizer: str, mu: float, s: float, noise_patches: int = 1) -> float:
    """Per-point ``eta`` reaching the target training loss in about 100-300 steps
    (``noise_patches`` noise patches a sample, each of sparsity ``s``)."""
    if optimizer == "gd":
        return 0.05 * N * M_V / (noise_patches * xi_l2sq(s) + N * mu ** 2)
    return 3.0 / (600.0 * (mu + noise_patches * xi_l1(s)))


def grid(quick: bool) -> tuple[list[float], list[int]]:
    if quick:
        return [0.3, 3.0, 100.0], [16]
    return [float(v) for v in np.round(10.0 ** np.arange(-1.0, 2.51, 0.5), 2)], [4, 8, 16, 32, 64, 128, 256]


def sweep_points(quick: bool, seeds: int):
    from workflows.sweep import expand
    from simulator import SimulationConfig

    base = SimulationConfig(d=10**9, n=N, sigma_p=SIGMA_P, m_k=10, m_v=M_V, sigma_0=0.005,
                            n_test=200 if quick else 500, steps=600 if quick else 800,
                            record_every=2, engine="reduced", reduced_init="distribution")
    mus, ss = grid(quick)
    entries = [{"s": s, "mu_norm": mu, "optimizer": opt, "eta": learning_rate(opt, mu, s)}
               for s in ss for mu in mus for opt in OPTIMIZERS]
    return expand(base, [entries], seeds=seeds, match_train_loss=TARGET), mus, ss


def cell_table(rows) -> dict:
    """``(optimizer, s, mu) -> mean matched test loss, test error, step`` over seeds."""
    acc = defaultdict(list)
    for r in rows:
        acc[(r["optimizer"], r["s"], r["mu_norm"])].append(
            (r["matched_test_loss"], r["matched_test_error"], r["matched_step"]))
    return {k: tuple(float(np.mean(col)) for col in zip(*v)) for k, v in acc.items()}


def _plain_log_axes(a, xs=None, ys=None):
    """Ticks at the grid values (or decades), labelled as plain numbers, no minor ticks."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, values in ((a.xaxis, xs), (a.yaxis, ys)):
        if values is not None:
            axis.set_major_locator(FixedLocator(values))
        axis.set_major_formatter(plain)
        axis.set_minor_locator(NullLocator())


def plot_phase(cells, mus, ss, path):
    from analysis.figures import style

    plt = pyplot()
    with style():
        fig, axes = plt.subplots(2, 3, figsize=(17, 10.5), squeeze=False)
        fig.subplots_adjust(left=0.055, right=0.975, top=0.86, bottom=0.07, wspace=0.22, hspace=0.3)
        mu_edges = _edges(mus)
        s_edges = _edges(ss)
        mu_line = np.geomspace(mu_edges[0], mu_edges[-1], 100)
        for col, opt in enumerate(OPTIMIZERS):
            for row, (metric, vmax, title) in enumerate(((0, math.log(2), "test loss"),
                                                         (1, 0.5, "test error"))):
                a = axes[row, col]
                Z = np.array([[cells[(opt, s, mu)][metric] for mu in mus] for s in ss])
                mesh = a.pcolormesh(mu_edges, s_edges, Z, vmin=0, vmax=vmax, cmap="viridis")
                for i, s in enumerate(ss):
                    for j, mu in enumerate(mus):
                        if np.isfinite(Z[i, j]):   # ".13": two decimals fit a cell at 11 pt
                            a.text(mu, s, f"{Z[i, j]:.2f}".lstrip("0"), ha="center", va="center",
                                   fontsize=11, color="w" if Z[i, j] < 0.6 * vmax else "k")
                s_sign = mu_line / (SIGMA_P * math.sqrt(2 / math.pi))     # ||mu|| = E||xi||_1
                s_gd = N * mu_line ** 2 / SIGMA_P ** 2                    # n ||mu||^2 = E||xi||_2^2
                a.plot(mu_line, s_sign, color="tab:red", lw=2.5,
                       label=r"sign methods: $\|\mu\| = E\|\xi\|_1 = s\sigma_p\sqrt{2/\pi}$")
                a.plot(mu_line, s_gd, color="w", lw=2.5, ls="--",
                       label=r"GD: $n\|\mu\|^2 = E\|\xi\|_2^2 = s\sigma_p^2$")
                a.set(xscale="log", yscale="log", xlim=mu_edges[[0, -1]], ylim=s_edges[[0, -1]],
                      xlabel=r"signal strength $\|\mu\|$",
                      title=f"{opt}: {title} at train loss {TARGET}")
                _plain_log_axes(a, ys=ss)
                if col == 0:
                    a.set_ylabel("noise sparsity $s$")
                cb = fig.colorbar(mesh, ax=a, shrink=0.9, pad=0.02)
                cb.set_label(f"matched {title}")
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=2,
                   bbox_to_anchor=(0.5, 0.945), facecolor="0.85")
        fig.suptitle(rf"Claim 4: where each optimizer generalizes ($n$={N}, $\sigma_p$={SIGMA_P:g}): "
                     "GD right of the dashed line, SignGD and Adam right of the red line")
    return save_figure(fig, path)


def plot_snr(cells, mus, ss, path):
    from analysis.figures import style

    plt = pyplot()
    with style():
        fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
        fig.subplots_adjust(left=0.055, right=0.975, top=0.9, bottom=0.15, wspace=0.25)
        x = np.array([[math.sqrt(gd_ratio(mu, s)) for mu in mus] for s in ss]).ravel()
        y = np.array([[sign_ratio(mu, s) for mu in mus] for s in ss]).ravel()
        for a, opt in zip(axes, OPTIMIZERS):
            z = np.array([[cells[(opt, s, mu)][0] for mu in mus] for s in ss]).ravel()
            sc = a.scatter(x, y, c=z, vmin=0, vmax=math.log(2), cmap="viridis", s=60,
                           edgecolors="k", linewidths=0.4)
            a.axvline(1.0, color="k", ls="--", label="GD boundary")
            a.axhline(1.0, color="tab:red", label="sign-method boundary")
            a.set(xscale="log", yscale="log", title=f"{opt}: matched test loss",
                  xlabel=r"$\sqrt{n}$ l2-SNR $= \sqrt{n}\|\mu\| / (\sigma_p\sqrt{s})$")
            _plain_log_axes(a)
            cb = fig.colorbar(sc, ax=a, pad=0.02)
            cb.set_label("matched test loss")
        axes[0].set_ylabel(r"l1-SNR $\|\mu\| / E\|\xi\|_1$")
        axes[0].legend(loc="lower right")
    return save_figure(fig, path)


def _edges(values):
    v = np.log(np.asarray(values, dtype=float))
    if v.size == 1:
        return np.exp(np.array([v[0] - 0.5, v[0] + 0.5]))
    mid = (v[1:] + v[:-1]) / 2
    return np.exp(np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]]))


def main(argv: list[str] | None = None) -> dict:
    p = parser("gd_vs_signgd", "Phase diagram of test loss: SignGD and Adam vs GD (claim 4).")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="runs per point (default 2; quick: 1)")
    args = p.parse_args(argv)
    from pathlib import Path

    from workflows.sweep import RESULTS_FILE, run_sweep

    out = Path(args.out)
    seeds = args.seeds or (1 if args.quick else 2)
    points, mus, ss = sweep_points(args.quick, seeds)
    print(f"gd_vs_signgd: {len(points)} points x {seeds} seed(s) (reduced engine), "
          f"matched at train loss {TARGET}")
    res = run_sweep(points, out / "sweep", workers=args.workers, match_train_loss=TARGET,
                    progress=not args.quick)
    if res.failed or res.interrupted:
        raise SystemExit(f"sweep incomplete ({len(res.failed)} failed); rerun to resume")
    cells = cell_table(res.rows)

    never = sorted({k for k, v in cells.items() if not np.isfinite(v[0])})
    print(f"\nmatched test loss (log 2 = {math.log(2):.3f}); "
          f"generalizes := below {GENERALIZES:.3f}")
    for s in ss:
        print(f"  s={s:<4d} ||mu||: " + " ".join(f"{mu:6.3g}" for mu in mus)
              + f"   (GD line ||mu||={SIGMA_P * math.sqrt(s / N):.3g}, sign line {xi_l1(s):.3g})")
        for opt in OPTIMIZERS:
            print(f"    {opt:<12s}  " + " ".join(f"{cells[(opt, s, mu)][0]:6.3f}" for mu in mus))
    gen = {k: v[0] < GENERALIZES for k, v in cells.items()}
    gd_only = [(s, mu) for s in ss for mu in mus if gen[("gd", s, mu)] and not gen[("signgd", s, mu)]]
    sign_only = [(s, mu) for s in ss for mu in mus if gen[("signgd", s, mu)] and not gen[("gd", s, mu)]]
    print(f"\nGD generalizes and SignGD does not at {len(gd_only)} of {len(ss) * len(mus)} cells "
          f"(s, ||mu||): " + ", ".join(f"({s}, {mu:g})" for s, mu in gd_only))
    print(f"SignGD generalizes and GD does not at {len(sign_only)} cells")
    agreement = {}
    for opt in OPTIMIZERS:
        theory = gd_ratio if opt == "gd" else sign_ratio
        hits = [gen[(opt, s, mu)] == (theory(mu, s) > 1) for s in ss for mu in mus]
        agreement[opt] = sum(hits) / len(hits)
        print(f"  {opt:<7s}: the theory line ({'n||mu||^2 = ||xi||_2^2' if opt == 'gd' else '||mu|| = ||xi||_1'}) "
              f"sorts {sum(hits)} of {len(hits)} cells correctly")
    if never:
        print(f"  never reached train loss {TARGET}: {never}")

    figs = [plot_phase(cells, mus, ss, out / "phase_diagram.png"),
            plot_snr(cells, mus, ss, out / "snr.png")]
    import shutil
    shutil.copyfile(out / "sweep" / RESULTS_FILE, out / "results.csv")
    print("\nwrote " + ", ".join(str(f) for f in figs) + f", {out / 'results.csv'}")
    return {"cells": cells, "mus": mus, "ss": ss, "gd_only": gd_only, "sign_only": sign_only,
            "agreement": agreement, "figures": figs}


if __name__ == "__main__":
    main()
    sys.exit(0)
