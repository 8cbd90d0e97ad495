"""Claim 3: Adam behaves like SignGD (and where it does not).

``docs/theory.md`` section 7, claims 3 and 5. The same data and the same initial weights
(one seed: the data and ``W_0`` do not depend on the optimizer) are trained by SignGD
and by Adam with several ``(beta1, beta2)``: ``(0, 0)`` (Adam's step is then
``G / (|G| + eps)``, SignGD as ``eps -> 0``), with ``eps = 1e-8`` and ``eps = 0``,
and the usual ``(0.9, 0.99)`` and ``(0.9, 0.999)``. The example reports

* how close the trajectories of the section 4 quantities (``Vs, Vn, Qs, Ks, Qn, Kn``)
  stay to SignGD's: the largest gap over training, relative to SignGD's range;
* which stage events (``T1 .. T4`` from :func:`analysis.summary.run_summary`) each
  run shows;
* whose negative query noises flip: query noises ``<w_{Q,s}, y_i xi_i>`` that are
  negative at ``T2`` (after Stage II's sign alignment) and end positive (Stage IV;
  ``minority_flips`` in the returned numbers is the summary's count of such flips
  among minority pairs). Under SignGD a
  tiny gradient still moves a weight by ``eta``, so key and then query noise follow the
  neuron's majority; Adam divides by ``sqrt(v)``, a memory of earlier, larger
  gradients, so the same tiny gradient barely moves it;
* the shape of the training loss: a linear rate (``log L`` linear in ``t``) against a
  sublinear one (``log L`` linear in ``log t``), by which of the two straight-line
  fits over the second half of training leaves the smaller residual.

Run::

    python examples/adam_vs_signgd.py           # about 35 s on 2 cores
    python examples/adam_vs_signgd.py --quick   # 3 of the 5 settings, coarse records (seconds)

A correct run prints one line per optimizer with its trajectory gap, stage times,
flips and loss shape. Adam with ``beta1 = beta2 = 0`` and ``eps = 0`` matches SignGD
to rounding (gap ~1e-12 or exactly 0); with ``eps = 1e-8`` it departs in Stage IV,
where gradients fall below ``eps``; ``(0.9, 0.999)`` keeps the early stages but flips
no negative query noise and its loss falls at a sublinear rate, while SignGD's falls
at a linear one. Measured (seed 0)::

    signgd                  0.0e+00  0.0e+00   5  50  215  1135   7 of 40  1.12e-04  0.6892  linear (rate ratio 1.02)
    adam b=(0,0) eps=0      0.0e+00  0.0e+00   5  50  215  1135   7 of 40  1.12e-04  0.6892  linear (rate ratio 1.02)
    adam b=(0,0) eps=1e-8   4.3e-02  9.2e-01   5  50  295  1120   0 of 40  1.14e-04  0.6880  linear (rate ratio 1.01)
    adam b=(0.9,0.99)       2.6e-01  1.2e+00   5  50  230  1200   0 of 41  4.35e-04  0.6885  linear (rate ratio 1.01)
    adam b=(0.9,0.999)      7.1e-01  8.3e-01   5  50  210  1420   0 of 41  1.25e-02  0.6914  sublinear (rate ratio 0.63)
 Figures: ``trajectories.png`` and ``loss.png`` in
``examples/output/adam_vs_signgd/``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from _common import parser, pyplot, save_figure

SETTINGS = (  # label, optimizer, beta1, beta2, eps
    ("signgd", "signgd", 0.9, 0.999, 1e-8),
    ("adam b=(0,0) eps=0", "adam", 0.0, 0.0, 0.0),
    ("adam b=(0,0) eps=1e-8", "adam", 0.0, 0.0, 1e-8),
    ("adam b=(0.9,0.99)", "adam", 0.9, 0.99, 1e-8),
    ("adam b=(0.9,0.999)", "adam", 0.9, 0.999, 1e-8),
)
QUICK = (0, 1, 4)              # the settings --quick runs
QUANTITIES = ("Vs", "Vn", "Qs", "Ks", "Qn", "Kn")


def base_config(quick: bool):
    from simulator import SimulationConfig

    if quick:   # the built-in job, coarser records, 3 of the settings
        return SimulationConfig(n_test=100, record_every=50)
    return SimulationConfig(record_every=5)       # the built-in main job, 4000 steps


def trajectory_gap(h, ref) -> dict[str, float]:
    """Per quantity, ``max_t |X(t) - X_ref(t)| / (max_t |X_ref(t)|)`` (run 0)."""
    return {name: float(np.abs(h[name] - ref[name]).max() / np.abs(ref[name]).max())
            for name in QUANTITIES}


def loss_shape(h) -> dict[str, float]:
    """Linear or sublinear rate, from the local rate ``-d log L / dt``.

    A linear rate (``L ~ exp(-c t)``) keeps ``-d log L / dt`` constant; a sublinear one
    (``L ~ t^-a``) lets it fall like ``a / t``, to about 0.4 of its second-quarter value
    by the last quarter. ``rate_ratio`` is the mean rate over the last quarter of
    training divided by the mean rate over the second quarter; the shape is
    ``linear`` when it is at least 0.75.
    """
    t = h.steps.astype(float)
    logL = np.log(np.maximum(h["train_loss"][:, 0], np.finfo(float).tiny))
    k = [int(np.searchsorted(t, f * t[-1])) for f in (0.25, 0.5, 0.75)]
    rate_q2 = (logL[k[0]] - logL[k[1]]) / (t[k[1]] - t[k[0]])
    rate_q4 = (logL[k[2]] - logL[-1]) / (t[-1] - t[k[2]])
    ratio = float(rate_q4 / rate_q2) if rate_q2 > 0 else math.nan
    return {"rate_q2": float(rate_q2), "rate_q4": float(rate_q4), "rate_ratio": ratio,
            "shape": "linear" if ratio >= 0.75 else "sublinear"}


LOOK = {  # label -> line style: SignGD thick and black underneath, its exact twin dashed on top
    "signgd": dict(color="black", lw=3.4, zorder=2),
    "adam b=(0,0) eps=0": dict(color="tab:orange", lw=1.6, ls=(0, (4, 3)), zorder=4),
    "adam b=(0,0) eps=1e-8": dict(color="tab:green", lw=1.6, zorder=3),
    "adam b=(0.9,0.99)": dict(color="tab:blue", lw=1.6, zorder=3),
    "adam b=(0.9,0.999)": dict(color="tab:red", lw=1.6, zorder=3),
}


PAIR_COLORS = ("tab:purple", "tab:brown", "tab:cyan")   # not the optimizers' colours


def _label(res) -> str:
    if res["label"] == "adam b=(0,0) eps=0":
        return res["label"] + " (= SignGD, dashed)"
    return res["label"]


def plot_trajectories(results, path):
    from analysis.figures import config_title, style

    plt = pyplot()
    with style():
        fig, ax = plt.subplots(2, 2, figsize=(13, 8.6))
        fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.07, hspace=0.34, wspace=0.2)
        ref = results[0]["history"]
        t = ref.steps
        a = ax[0, 0]
        for res in results:
            h = res["history"]
            a.plot(t, h["Vn"][:, 0].mean(-1), label=_label(res), **LOOK[res["label"]])
            a.plot(t, h["Vs"][:, 0], **{**LOOK[res["label"]], "ls": ":"})
        a.set(title=r"(a) value noise $\langle\bar v, y_i\xi_i\rangle$ (mean over $i$) and "
                    r"signal $\langle\bar v, \mu\rangle$ (dotted)", xlabel="step")
        a.legend(loc="upper left")
        a = ax[0, 1]
        show = [r for r in results if r["label"] in ("signgd", "adam b=(0.9,0.999)")]
        pairs = _flip_pairs(results[0])[:3] or [(0, 0), (0, 1)]    # SignGD's flips
        for j, (s, i) in enumerate(pairs):
            for res, ls in zip(show, ("-", "--")):
                a.plot(t, res["history"]["Qn"][:, 0, s, i], color=PAIR_COLORS[j % 3], ls=ls, lw=1.8)
        for res, ls in zip(show, ("-", "--")):
            a.plot([], [], color="k", ls=ls, label=f"{res['label']}")
        a.axhline(0, color="gray", lw=0.5)
        a.set(title=r"(b) query noise $\langle w_{Q,s}, y_i\xi_i\rangle$ of pairs SignGD flips",
              xlabel="step")
        a.legend(loc="lower left")
        a = ax[1, 0]
        for res in results[1:]:
            h = res["history"]
            gap = np.max([np.abs(h[q] - ref[q]).reshape(len(t), -1).max(-1) / np.abs(ref[q]).max()
                          for q in QUANTITIES], axis=0)
            a.semilogy(t, np.maximum(gap, 1e-17), label=_label(res).replace(
                " (= SignGD, dashed)", " (gap 0, drawn at 1e-17)"), **LOOK[res["label"]])
        a.set(title=r"(c) gap to SignGD, $\max_X |X - X_{\mathrm{signgd}}| / \max|X_{\mathrm{signgd}}|$",
              xlabel="step")
        a.legend(loc="center right")
        a = ax[1, 1]
        tiny = np.finfo(float).tiny
        for res in results:
            S = res["history"]["softmax"][:, 0]
            a.semilogy(t, np.maximum(np.median(S[:, :, 1, 0], axis=-1), tiny), label=_label(res),
                       **LOOK[res["label"]])
        a.set(title=r"(d) median over $i$ of $s_{i,21}$ (lines as in (a))", xlabel="step")
        fig.suptitle("SignGD vs Adam on the same data and initialization\n"
                     + config_title(ref).split(": ", 1)[1])
    return save_figure(fig, path)


def plot_loss(results, path):
    from analysis.figures import style

    plt = pyplot()
    with style():
        fig, ax = plt.subplots(1, 2, figsize=(13, 5))
        fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.12, wspace=0.2)
        for res in results:
            h = res["history"]
            t, L = h.steps, h["train_loss"][:, 0]
            ax[0].semilogy(t, L, label=f"{_label(res)}, {res['shape']['shape']}", **LOOK[res["label"]])
            ax[1].loglog(t[1:], L[1:], label=res["label"], **LOOK[res["label"]])
        ax[0].set(title="training loss, log scale: a straight line is a linear rate", xlabel="step")
        ax[1].set(title="log-log: a straight line is a sublinear (power-law) rate", xlabel="step")
        ax[0].legend(loc="lower left", fontsize=11)
    return save_figure(fig, path)


def _flip_pairs(res) -> list[tuple[int, int]]:
    """``(s, i)`` pairs whose query noise is negative at ``T2`` (after Stage II's sign
    alignment; a third of training if ``T2`` was not detected) and positive at the end."""
    h = res["history"]
    Qn = h["Qn"][:, 0]                                     # (T, m_k, n)
    T2 = res["summary"]["T2"]
    k = int(np.searchsorted(h.steps, T2)) if np.isfinite(T2) else Qn.shape[0] // 3
    s, i = np.nonzero((Qn[min(k, Qn.shape[0] - 1)] < 0) & (Qn[-1] > 0))
    return list(zip(s.tolist(), i.tolist()))


def _negative_at_T2(res) -> int:
    h = res["history"]
    T2 = res["summary"]["T2"]
    k = int(np.searchsorted(h.steps, T2)) if np.isfinite(T2) else h["Qn"].shape[0] // 3
    return int((h["Qn"][min(k, h["Qn"].shape[0] - 1), 0] < 0).sum())


def main(argv: list[str] | None = None) -> dict:
    p = parser("adam_vs_signgd", "SignGD and Adam on the same data and initialization (claim 3).")
    args = p.parse_args(argv)
    from analysis.summary import run_summary
    from simulator import run

    out = Path(args.out)
    base = base_config(args.quick)
    print(f"adam_vs_signgd: {base.steps} steps, n={base.n}, m_k={base.m_k}, eta={base.eta:g}, "
          f"seed={base.seed}; full engine")
    results = []
    settings = [SETTINGS[i] for i in QUICK] if args.quick else SETTINGS
    for label, opt, b1, b2, eps in settings:
        h = run(base.replace(optimizer=opt, beta1=b1, beta2=b2, eps=eps))
        summ = run_summary(h)[0]
        results.append({"label": label, "history": h, "summary": summ, "shape": loss_shape(h)})
    ref = results[0]["history"]
    print(f"\n{'optimizer':<22s} {'gap V':>8s} {'gap QK':>8s}  {'T1':>5s} {'T2':>5s} {'T3':>5s} {'T4':>5s}  "
          f"{'neg->pos Qn':>11s}  {'final loss':>10s} {'test loss':>9s}  loss rate")
    for res in results:
        res["gap"] = trajectory_gap(res["history"], ref)
        s = res["summary"]
        flips, negative = len(_flip_pairs(res)), _negative_at_T2(res)
        res["flips"] = flips
        res["minority_flips"] = s.get("query_noise_negative_to_positive", math.nan)
        sh = res["shape"]
        times = " ".join(f"{s[k]:5.0f}" if np.isfinite(s[k]) else "    -" for k in ("T1", "T2", "T3", "T4"))
        value_gap = max(res["gap"]["Vs"], res["gap"]["Vn"])
        qk_gap = max(res["gap"]["Qn"], res["gap"]["Kn"])
        print(f"{res['label']:<22s} {value_gap:8.1e} {qk_gap:8.1e}  {times}  "
              f"{flips:>4} of {negative:<4}  {s['final_train_loss']:10.2e} {s['final_test_loss']:9.4f}  "
              f"{sh['shape']} (rate ratio {sh['rate_ratio']:.2f})")
    print("\ngap V (gap QK): max over t, over Vs and Vn (Qn and Kn), of |X - X_signgd| / max|X_signgd|;"
          "\nneg->pos Qn: query noises <w_Q,s, y_i xi_i> negative at T2 (after sign alignment) that end"
          " positive (of all negative at T2);\nrate ratio: -dlogL/dt over the last quarter / over the second (linear if >= 0.75).")
    figs = [plot_trajectories(results, out / "trajectories.png"), plot_loss(results, out / "loss.png")]
    print("wrote " + ", ".join(str(f) for f in figs))
    return {r["label"]: {"gap": r["gap"], "summary": r["summary"], "shape": r["shape"],
                         "flips": r["flips"], "minority_flips": r["minority_flips"]}
            for r in results} | {"figures": figs}


if __name__ == "__main__":
    main()
    sys.exit(0)
