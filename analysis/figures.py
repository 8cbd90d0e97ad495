"""Figures of a run (matplotlib, PNG, sized for a paper column pair).

* :func:`save_stages_figure`: four panels in the spirit of Figure 1 of Li et al. (2024):
  (a) key noise ``<w_{K,s}, y_i xi_i>`` over the first steps, (b) mean value noise
  ``<vbar, y_i xi_i>`` and value signal over the first steps, (c) softmax outputs
  ``s_{i,11}``, ``s_{i,21}`` over training (log scale), (d) query noise, key noise and
  query signal of one neuron, coloured by the sign of the query noise at a chosen step.
* :func:`save_loss_figure`: train/test loss and test error with the detected stage
  times marked.

Both show run 0 of the history and mark the stage times of :mod:`analysis.stages`.
"""

from __future__ import annotations

import os

import numpy as np

from simulator import History
from simulator.io import atomic_write_with

from .quantities import quantities
from .stages import detect_stages

STAGE_COLORS = {"T1": "tab:orange", "T2": "tab:green", "T3": "tab:purple", "T4": "tab:brown"}
POS, NEG = "tab:red", "tab:blue"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8.5,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _mark(ax, times: dict, t_max: float, labels: bool = True) -> None:
    for name, t in times.items():
        if np.isfinite(t) and t <= t_max:
            ax.axvline(t, color=STAGE_COLORS[name], lw=1, ls="--", alpha=0.8,
                       label=name if labels else None)


def _save(fig, path) -> None:
    atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=120))


def early_window(st, step: np.ndarray) -> int:
    """Steps shown in panels (a), (b): a few times ``T2`` (at least 3 ``T1``, 20 steps)."""
    t2 = st.T2[0] if np.isfinite(st.T2[0]) else step[-1] / 10
    t1 = st.T1[0] if np.isfinite(st.T1[0]) else 0
    return int(min(step[-1], max(20, 3 * t1, 1.5 * t2)))


def save_stages_figure(history: History, path: str | os.PathLike, *, neuron: int = 0,
                       color_step: float | None = None) -> None:
    """The four-panel figure (module doc) of run 0, for ``neuron`` in panels (a), (d).
    ``color_step``: the step whose query-noise sign colours panels (a) and (d)
    (default: the detected ``T2``, when the pairs have just aligned)."""
    plt = _plt()
    h = history.run(0) if history.n_runs > 1 else history
    q = quantities(h)
    st = detect_stages(q)
    cfg = h.config
    if not 0 <= neuron < cfg.m_k:
        raise ValueError(f"neuron must be between 0 and {cfg.m_k - 1}, got {neuron}")
    step = q.step
    times = {k: float(getattr(st, k)[0]) for k in ("T1", "T2", "T3", "T4")}
    early = step <= early_window(st, step)
    if color_step is None:
        color_step = times["T2"] if np.isfinite(times["T2"]) else step[-1]
    kc = int(np.clip(np.searchsorted(step, color_step), 0, step.size - 1))

    fig, ax = plt.subplots(2, 2, figsize=(11, 7.8))   # fixed margins: constrained layout costs ~0.7 s
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.07, top=0.91, wspace=0.25, hspace=0.32)
    # (a) key noise, first steps
    a = ax[0, 0]
    Kn = q.Kn[:, 0, neuron]                                       # (T, n)
    for i in range(Kn.shape[1]):
        a.plot(step[early], Kn[early, i], lw=1.2,
               color=POS if q.Qn[kc, 0, neuron, i] > 0 else NEG, alpha=0.85)
    a.axhline(0, color="gray", lw=0.6)
    _mark(a, {k: times[k] for k in ("T1", "T2")}, step[early][-1])
    a.plot([], [], color=POS, label=f"positive at step {step[kc]}")
    a.plot([], [], color=NEG, label=f"negative at step {step[kc]}")
    a.set(title=rf"(a) key noise $\langle w_{{K,{neuron}}}, y_i\xi_i\rangle$, first steps",
          xlabel="step")
    a.legend(loc="best")
    # (b) value noise and value signal, first steps
    a = ax[0, 1]
    a.plot(step[early], q.Vn[early, 0], color="tab:red", lw=1, alpha=0.7)
    a.plot([], [], color="tab:red", label=r"value noise $\langle \bar v, y_i\xi_i\rangle$")
    a.plot(step[early], q.Vs[early, 0], color="k", lw=2.2,
           label=r"value signal $\langle \bar v, \mu\rangle$")
    _mark(a, {"T1": times["T1"]}, step[early][-1])
    a.set(title="(b) mean value noise overtakes value signal", xlabel="step")
    a.legend(loc="best")
    # (c) softmax outputs over training, log scale
    a = ax[1, 0]
    tiny = np.finfo(float).tiny
    a.semilogy(step, np.maximum(q.s21[:, 0], tiny), color="tab:purple", lw=1, alpha=0.8)
    a.semilogy(step, np.maximum(q.s11[:, 0], tiny), color="tab:green", lw=1, alpha=0.8)
    a.plot([], [], color="tab:purple", label=r"$s_{i,21}$ (noise query on signal key)")
    a.plot([], [], color="tab:green", label=r"$s_{i,11}$ (signal query on signal key)")
    a.axhline(st.s21_threshold * float(np.median(q.s21[0, 0])), color="gray", lw=0.6, ls=":",
              label=f"{st.s21_threshold:g} x initial")
    _mark(a, times, step[-1])
    a.set(title="(c) softmax outputs", xlabel="step")
    a.legend(loc="lower left")
    # (d) query noise, key noise and query signal of one neuron, coloured by sign
    a = ax[1, 1]
    Qn = q.Qn[:, 0, neuron]
    for i in range(Qn.shape[1]):
        c = POS if Qn[kc, i] > 0 else NEG
        a.plot(step, Qn[:, i], color=c, lw=1.2)
        a.plot(step, Kn[:, i], color=c, lw=1, ls=":")
    a.axhline(0, color="gray", lw=0.6)
    a.plot([], [], color="k", label=r"query noise $\langle w_{Q,s}, y_i\xi_i\rangle$")
    a.plot([], [], color="k", ls=":", label=r"key noise $\langle w_{K,s}, y_i\xi_i\rangle$")
    b = a.twinx()
    b.plot(step, q.Qs[:, 0, neuron], color="k", lw=2.2)
    b.set_ylabel(rf"query signal $\langle w_{{Q,{neuron}}}, \mu\rangle$")
    b.spines["right"].set_visible(True)
    a.plot([], [], color="k", lw=2.2, label="query signal (right axis)")
    _mark(a, {k: times[k] for k in ("T2", "T4")}, step[-1], labels=False)
    a.set(title=f"(d) neuron {neuron}: red/blue = sign of query noise at step {step[kc]}",
          xlabel="step")
    a.legend(loc="upper left")
    fig.suptitle(f"{cfg.optimizer}: d={cfg.d}, n={cfg.n}, s={cfg.s}, sigma_p={cfg.sigma_p:g}, "
                 f"||mu||={cfg.mu_norm:g}, sigma_0={cfg.sigma_0:g}, eta={cfg.eta:g}, "
                 f"seed={int(h['seeds'][0])}")
    _save(fig, path)
    plt.close(fig)


def save_loss_figure(history: History, path: str | os.PathLike) -> None:
    """Train and test loss (log scale) and test error of run 0, stage times marked."""
    plt = _plt()
    h = history.run(0) if history.n_runs > 1 else history
    st = detect_stages(quantities(h))
    step = h.steps
    fig, a = plt.subplots(figsize=(7, 4.2))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.9)
    tiny = np.finfo(float).tiny
    a.semilogy(step, np.maximum(h["train_loss"][:, 0], tiny), color="k", lw=2, label="train loss")
    a.semilogy(step, h["test_loss"][:, 0], color="tab:red", lw=2, label="test loss")
    a.axhline(np.log(2), color="gray", lw=0.6, ls=":")
    a.text(step[-1], np.log(2), " log 2", va="bottom", ha="right", color="gray", fontsize=8)
    _mark(a, {k: float(getattr(st, k)[0]) for k in ("T1", "T2", "T3", "T4")}, step[-1])
    b = a.twinx()
    b.plot(step, h["test_error"][:, 0], color="tab:red", lw=1, ls="--")
    b.set_ylim(0, 1)
    b.set_ylabel("test error (dashed)")
    b.spines["right"].set_visible(True)
    a.set(xlabel="step", ylabel="logistic loss", title="training and test loss")
    a.legend(loc="lower left")
    _save(fig, path)
    plt.close(fig)
