"""Figures of a recorded run, for papers, slides and notebooks (matplotlib).

Figures
-------
* :func:`stages_figure`: four panels in the spirit of Figure 1 of Li et al. (2024):
  (a) key noise ``<w_{K,s}, y_i xi_i>`` over the first steps, (b) value noise
  ``<vbar, y_i xi_i>`` and value signal over the first steps, (c) softmax outputs
  ``s_{i,11}``, ``s_{i,21}`` over training (log scale), (d) query and key noise of one
  neuron, coloured by the sign of the query noise at a chosen step, over its query
  signal ``<w_{Q,s}, mu>``.
* :func:`loss_figure`: train and test loss and test error, stage times marked.
* :func:`slide_figure`: one panel per stage, on a time axis that gives every stage
  room, the stages shaded and named.
* :func:`pairs_figure`: two close-ups, a Stage II pair stuck in a period-2 oscillation
  next to one that aligns, and a minority pair flipping in Stage IV.
* :func:`patches_figure`: inputs of more than two patches, one colour per noise
  patch: value noise, attention on each key patch, and the share of aligned query/key
  noise pairs (the stage figures are for two patches).

The API
-------
Every figure function returns the :class:`~matplotlib.figure.Figure` it drew. It
makes a new one (a plain ``Figure``: no pyplot, no global state, nothing to close),
or draws into the ``fig`` (a ``Figure`` or ``SubFigure``) or ``ax`` you pass. The
panels are functions too (``key_noise_panel(ax, data, ...)`` and so on), each drawing
into one given Axes, so a slide can combine any of them.

A history with several runs (a batch of seeds) is drawn as bands: the median over
runs (and samples or neurons) and the band between two quantiles, min-max by
default (``quantiles=(0, 1)``); ``run=r`` draws run ``r`` alone, with one line per
sample. Stage times of a batch are marked at their median, with their min-max range
shaded. :func:`save_figure` (and every ``save_*`` wrapper) writes the format the
file's extension names: ``.png``, ``.pdf``, ``.svg``, ...

Whole-training panels use a two-speed time axis by default (``time_scale="split"``):
the first steps, where ``T1`` and ``T2`` fall, take a quarter of the width, and the
rest is linear, so the straight lines of linear growth and of a linear loss rate stay
straight. ``"linear"`` and ``"symlog"`` are the alternatives.

Colours: red/blue are the signs of noise inner products, green ``s_{i,11}``, purple
``s_{i,21}``, black the value and query signals; stage times are dark grey, never a
curve colour, and named where they are drawn.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from simulator import History
from simulator.io import atomic_write_with

from .claims import NotAnalysed, analysed, patches_reason
from .quantities import Quantities, quantities
from .stages import Stages, detect_stages, first_pending

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STAGE_TIMES = ("T1", "T2", "T3", "T4")
STAGE_LABELS = ("I", "II", "III", "IV", "after T4")
"""Short names of the intervals before ``T1``, ``[T1, T2)``, ``[T2, T3)``,
``[T3, T4)`` and from ``T4`` on (see :func:`stage_index`)."""
STAGE_NAMES = ("Stage I: value noise takes over",
               "Stage II: query and key noise align",
               "Stage III: majority voting",
               "Stage IV: the noise query stops attending to the signal",
               "After T4: minority pairs flip to their neuron's majority")
POS, NEG = "tab:red", "tab:blue"
"""Positive and negative noise inner products."""
S11_COLOR, S21_COLOR = "tab:green", "tab:purple"
SIGNAL_COLOR = "black"
STAGE_COLOR = "0.3"
"""Stage-time lines: dark grey, the colour of no curve."""
SHADE = ("0.92", "white")
HIGHLIGHT = "#fdf1c7"
TIME_SCALES = ("split", "linear", "symlog")
TINY = np.finfo(float).tiny

STYLE = {"font.size": 12, "axes.titlesize": 12.5, "axes.labelsize": 12,
         "legend.fontsize": 11, "xtick.labelsize": 11, "ytick.labelsize": 11,
         "figure.titlesize": 13, "axes.spines.top": False, "axes.spines.right": False,
         "legend.framealpha": 0.9, "legend.edgecolor": "0.8", "axes.titley": 1.0}
"""Sizes read well on a slide at the saved size (no text below 11 pt). A fixed title
height (``axes.titley``) spares matplotlib a layout pass per Axes on every draw."""


# ---------------------------------------------------------------- data and stages
@dataclass(frozen=True)
class FigureData:
    """A history with its quantities and stage times, computed once for every panel.

    ``batch`` is true when the history holds several runs: panels then draw bands.
    """

    history: History
    q: Quantities
    stages: Stages

    @property
    def batch(self) -> bool:
        return self.q.R > 1

    @property
    def step(self) -> np.ndarray:
        return self.q.step

    def times(self, names: Sequence[str] = STAGE_TIMES) -> dict[str, np.ndarray]:
        """Stage times per run, name -> (R,) float (``nan``: never, or no stage analysis)."""
        if not analysed(self.stages):
            return {k: np.full(self.q.R, np.nan) for k in names}
        return {k: np.asarray(getattr(self.stages, k), dtype=float) for k in names}

    def two_patches(self, figure: str) -> None:
        """Refuse, in one line, a stage figure of a history of more than two patches."""
        if not analysed(self.stages):
            raise ValueError(f"the {figure} shows the stages of two-patch inputs, and "
                             f"{self.stages.reason}; patches_figure (python -m analysis plot) "
                             f"draws these runs")


def figure_data(history: History | FigureData, run: int | None = None) -> FigureData:
    """:class:`FigureData` of ``history`` (all runs, or run ``run`` alone)."""
    if isinstance(history, FigureData):
        if run is None or (run == 0 and not history.batch):
            return history
        history = history.history
    if run is not None:
        if not 0 <= run < history.n_runs:
            raise ValueError(f"run must be between 0 and {history.n_runs - 1}, got {run}")
        history = history.run(run) if history.n_runs > 1 else history
    q = quantities(history)
    why = patches_reason(history.config)
    return FigureData(history, q, NotAnalysed(why) if why else detect_stages(q))


def stage_index(times: Mapping[str, float], step) -> np.ndarray:
    """Which stage each step is in: 0 (Stage I, before ``T1``), 1 (Stage II), 2 (Stage
    III), 3 (Stage IV) or 4 (after ``T4``, once all four stages are complete).

    ``times``: ``{"T1": ..., "T4": ...}`` of one run (``nan``: never). A step is in the
    earliest stage not yet complete (:func:`analysis.stages.first_pending`, the rule of
    the report), so where stages overlap (``T4`` before ``T3``) a step past ``T4`` is
    still in Stage III until ``T3``. Index :data:`STAGE_LABELS` or :data:`STAGE_NAMES`
    with the result; the shape is that of ``step``.
    """
    shape = np.shape(step)
    T = np.array([[float(times[name])] for name in STAGE_TIMES])       # (4, 1)
    return first_pending(T, step)[:, 0].reshape(shape)


def early_window(st: Stages, step: np.ndarray) -> int:
    """Steps shown in the early panels and stretched on a split time axis: 1.5 ``T2``
    (at least 3 ``T1`` and 20 steps; the latest run of a batch). Without a stage
    analysis, a tenth of the run."""
    if not analysed(st):
        return int(min(step[-1], max(20, step[-1] / 10)))
    t2, t1 = np.asarray(st.T2, float), np.asarray(st.T1, float)
    t2 = np.nanmax(t2) if np.isfinite(t2).any() else step[-1] / 10
    t1 = np.nanmax(t1) if np.isfinite(t1).any() else 0
    return int(min(step[-1], max(20, 3 * t1, 1.5 * t2)))


# ---------------------------------------------------------------- drawing helpers
@contextlib.contextmanager
def style():
    """Matplotlib's rc settings of :data:`STYLE` while a figure is built."""
    import matplotlib
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(figsize) -> "Figure":
    """A figure outside pyplot (no global state, nothing to close), with an Agg canvas
    of its own: redraws reuse its renderer and text layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _lines(ax, x, Y, color, *, batch: bool, quantiles=(0.0, 1.0), lw=1.2, ls="-",
           alpha=0.85, zorder=2, log=False):
    """``Y`` (T, N): one line per column, or for a batch the median and a band between
    ``quantiles`` over the columns."""
    Y = np.asarray(Y, dtype=float).reshape(len(x), -1)
    if Y.shape[1] == 0:
        return
    if log:
        Y = np.maximum(Y, TINY)
    if not batch:
        ax.plot(x, Y, color=color, lw=lw, ls=ls, alpha=alpha, zorder=zorder)
        return
    lo, med, hi = np.quantile(Y, [quantiles[0], 0.5, quantiles[1]], axis=1)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0, zorder=zorder - 0.5)
    ax.plot(x, med, color=color, lw=lw + 0.8, ls=ls, zorder=zorder)


def _proxy(color, label, *, ls="-", lw=2.0, band=False):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    if band:
        return (Patch(color=color, alpha=0.2, lw=0), Line2D([], [], color=color, ls=ls, lw=lw)), label
    return Line2D([], [], color=color, ls=ls, lw=lw), label


def _legend(ax, entries, **kw):
    from matplotlib.legend_handler import HandlerTuple
    handles, labels = zip(*entries)
    return ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=1)}, **kw)


def set_time_axis(ax, end: float, *, scale: str = "split", early: float | None = None,
                  share: float = 0.25, label: bool = True) -> None:
    """Make ``ax``'s x axis a time axis from 0 to ``end`` steps.

    ``scale``: ``"linear"``; ``"symlog"`` (linear to 10 steps, logarithmic beyond);
    ``"split"``: the first ``early`` steps take a ``share`` of the width and the rest
    is linear, both pieces linear (the x label says how much the first steps are
    stretched).
    """
    if scale not in TIME_SCALES:
        raise ValueError(f"time_scale must be one of {', '.join(TIME_SCALES)}, got {scale!r}")
    end = float(end)
    ax.set_xlim(0, end)
    text = "step"
    if scale == "symlog":
        from matplotlib.ticker import FuncFormatter
        ax.set_xscale("symlog", linthresh=10, linscale=0.6)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        text = "step (log scale beyond 10)"
    elif scale == "split" and early is not None and 0 < early < end * (1 - share) and end > 0:
        from matplotlib.ticker import FixedLocator, MaxNLocator
        b, w = float(early), share

        def fwd(t):
            t = np.asarray(t, dtype=float)
            return np.where(t < b, t * (w / b), w + (t - b) * ((1 - w) / (end - b)))

        def inv(u):
            u = np.asarray(u, dtype=float)
            return np.where(u < w, u * (b / w), b + (u - w) * ((end - b) / (1 - w)))

        ax.set_xscale("function", functions=(fwd, inv))
        ax.set_xlim(0, end)
        lo = [t for t in MaxNLocator(nbins=3, integer=True).tick_values(0, b) if 0 <= t < 0.8 * b]
        hi = [t for t in MaxNLocator(nbins=4, integer=True).tick_values(b, end)
              if b < t <= end and fwd(t) - w > 0.12]
        ax.xaxis.set_major_locator(FixedLocator(lo + hi))
        ax.axvline(b, color="0.55", lw=0.8, ls=(0, (1, 2)), zorder=0.5)
        stretch = (w / b) / ((1 - w) / (end - b))
        text = f"step (steps 0-{b:g} stretched x{stretch:.0f})"
    if label:
        ax.set_xlabel(text)


def mark_stages(ax, times: Mapping[str, np.ndarray], *, labels: bool = True,
                t_max: float | None = None) -> None:
    """Dashed dark-grey lines at the stage ``times`` (name -> (R,); median over runs, their
    min-max range shaded for a batch), each named at the top of the axes. Call it
    after the axis limits and scale are set: close labels are stacked."""
    from matplotlib.transforms import blended_transform_factory
    x0, x1 = ax.get_xlim()
    t_max = x1 if t_max is None else t_max
    tr = ax.xaxis.get_transform()
    u0, u1 = tr.transform([x0, x1])
    placed: list[float] = []
    blend = blended_transform_factory(ax.transData, ax.transAxes)
    for name in times:
        t = np.asarray(times[name], dtype=float).ravel()
        t = t[np.isfinite(t)]
        if t.size == 0:
            continue
        med = float(np.median(t))
        if not x0 <= med <= t_max:
            continue
        if t.size > 1 and t.max() > t.min():
            ax.axvspan(t.min(), min(t.max(), t_max), color=STAGE_COLOR, alpha=0.08, lw=0, zorder=0.4)
        ax.axvline(med, color=STAGE_COLOR, lw=1.1, ls=(0, (4, 3)), zorder=1)
        if not labels:
            continue
        frac = (float(tr.transform([med])[0]) - u0) / (u1 - u0)
        row = sum(1 for p in placed if abs(frac - p) < 0.07)
        placed.append(frac)
        ax.text(med, 0.985 - 0.085 * row, f" {name}", transform=blend, ha="left", va="top",
                color=STAGE_COLOR, fontsize=11, zorder=5,
                bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.75))


def shade_stages(ax, step: np.ndarray, times: Mapping[str, float], *, highlight: int | None = None,
                 labels: bool = True) -> None:
    """Shade the stages of one run (:func:`stage_index` over ``step``) in alternating
    greys, stage ``highlight`` in yellow, each named at the top of the axes."""
    from matplotlib.transforms import blended_transform_factory
    idx = stage_index(times, step)
    cuts = np.flatnonzero(np.diff(idx)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [step.size - 1]])
    blend = blended_transform_factory(ax.transData, ax.transAxes)
    width = ax.get_position().width * ax.get_figure(root=True).get_figwidth()
    for a, b in zip(starts, ends):
        k = int(idx[a])
        color = HIGHLIGHT if k == highlight else SHADE[k % 2]
        ax.axvspan(step[a], step[b], color=color, lw=0, zorder=0)
        tr = ax.xaxis.get_transform()
        u = tr.transform(np.array([step[a], step[b]], float))
        x0, x1 = tr.transform(np.array(ax.get_xlim(), float))
        inches = (u[1] - u[0]) / (x1 - x0) * width                 # the band's width
        if labels and inches > 0.1 * (1 + len(STAGE_LABELS[k])):   # room for its name
            mid = tr.inverted().transform(np.array([u.mean()]))[0]
            ax.text(mid, 0.985, STAGE_LABELS[k], transform=blend, ha="center", va="top",
                    fontsize=11, color="0.25", zorder=5, fontweight="bold")


def decade_ticks(low: float, high: float = 1.0, most: int = 6) -> list[float]:
    """Powers of ten from ``high`` down to ``low``, at most ``most``, a round number of
    decades apart (for log axes spanning many decades)."""
    lo = int(np.floor(np.log10(max(low, 1e-308))))
    hi = int(np.floor(np.log10(max(high, 1e-308))))
    span = max(hi - lo, 1)
    gap = next(g for g in (1, 2, 5, 10, 20, 50, 100, 200) if span / g < most)
    return [10.0 ** e for e in range(hi, lo - 1, -gap)]


def plain_log_ticks(axis, low: float, high: float = 1.0) -> None:
    """Decade ticks (:func:`decade_ticks`) labelled in plain text (``1e-8``), no minor
    ticks: plain labels draw several times faster than matplotlib's mathtext ones,
    which counts where a figure is redrawn live or frame by frame."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    def label(x, _pos):
        e = np.log10(x) if x > 0 else np.nan
        return f"1e{e:.0f}" if np.isfinite(e) and abs(e - round(e)) < 1e-9 and e != 0 else \
            (f"{x:g}" if np.isfinite(e) else "")

    ticks = decade_ticks(low, high)
    if len(ticks) < 3:                                   # under two decades: 1, 2, 5 steps
        from matplotlib.ticker import LogLocator
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    else:
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_locator(NullLocator())


def config_title(history: History, quantiles=(0.0, 1.0)) -> str:
    """The config and the runs, in the symbols of the axes (a second line for a batch)."""
    cfg = history.config
    seeds = np.asarray(history["seeds"])
    d = f"$10^{{{np.log10(cfg.d):.0f}}}$" if cfg.d >= 10**6 and np.log10(cfg.d).is_integer() else f"{cfg.d}"
    text = (f"{cfg.optimizer}, {cfg.engine} engine: $d$={d}, $n$={cfg.n}, $s$={cfg.s}, "
            rf"$\sigma_p$={cfg.sigma_p:g}, $\|\mu\|$={cfg.mu_norm:g}, $\sigma_0$={cfg.sigma_0:g}, "
            rf"$\eta$={cfg.eta:g}")
    if seeds.size == 1:
        return text + f", seed {int(seeds[0])}"
    band = ("min to max" if tuple(quantiles) == (0.0, 1.0)
            else f"quantiles {quantiles[0]:g} to {quantiles[1]:g}")
    return text + (f"\n{seeds.size} runs (seeds {int(seeds[0])}-{int(seeds[-1])}): median and band "
                   f"({band}) over runs")


def _sign_at(x: np.ndarray, step: np.ndarray, when: float) -> np.ndarray:
    k = int(np.clip(np.searchsorted(step, when), 0, step.size - 1))
    return np.sign(x[k])


# ---------------------------------------------------------------- panels
def key_noise_panel(ax, data: FigureData, *, neuron: int = 0, color_step: float | None = None,
                    quantiles=(0.0, 1.0), legend: bool = True):
    """(a) Key noise ``<w_{K,s}, y_i xi_i>`` of ``neuron`` over the first steps, red
    or blue by the sign of its query noise at ``color_step`` (default ``T2``)."""
    step, q = data.step, data.q
    early = step <= early_window(data.stages, step)
    cs = _color_step(data, color_step)
    sign = _sign_at(q.Qn[:, :, neuron], step, cs)                 # (R, n)
    Kn = q.Kn[:, :, neuron]                                        # (T, R, n)
    for color, s in ((POS, 1), (NEG, -1)):
        _lines(ax, step[early], Kn[early][:, sign == s], color, batch=data.batch,
               quantiles=quantiles)
    ax.axhline(0, color="0.6", lw=0.7, zorder=1)
    ax.set_xlim(0, step[early][-1])
    ax.set_xlabel("step")
    ax.set_title(rf"(a) key noise $\langle w_{{K,{neuron}}}, y_i\xi_i\rangle$, first steps")
    mark_stages(ax, data.times(("T1", "T2")))
    if legend:
        _legend(ax, [_proxy(POS, "positive", band=data.batch),
                     _proxy(NEG, "negative", band=data.batch)],
                title=f"query noise at step {cs:g}", loc="center right")
    return ax


def value_panel(ax, data: FigureData, *, quantiles=(0.0, 1.0), legend: bool = True):
    """(b) Value noise ``<vbar, y_i xi_i>`` and value signal ``<vbar, mu>`` over the
    first steps: the noise overtakes the signal at ``T1``."""
    step, q = data.step, data.q
    early = step <= early_window(data.stages, step)
    _lines(ax, step[early], q.Vn[early], POS, batch=data.batch, quantiles=quantiles, lw=1.2)
    _lines(ax, step[early], q.Vs[early], SIGNAL_COLOR, batch=data.batch, quantiles=quantiles,
           lw=2.2, zorder=3)
    ax.set_xlim(0, step[early][-1])
    ax.set_xlabel("step")
    ax.set_title("(b) value noise overtakes the value signal")
    mark_stages(ax, data.times(("T1", "T2")))
    if legend:
        _legend(ax, [_proxy(POS, r"value noise $\langle \bar v, y_i\xi_i\rangle$", band=data.batch),
                     _proxy(SIGNAL_COLOR, r"value signal $\langle \bar v, \mu\rangle$",
                            lw=2.2, band=data.batch)], loc="upper left", bbox_to_anchor=(0.02, 0.9))
    return ax


def softmax_panel(ax, data: FigureData, *, time_scale: str = "split", quantiles=(0.0, 1.0)):
    """(c) Softmax outputs over training (log scale): ``s_{i,21}`` (noise query on the
    signal key) collapses, ``s_{i,11}`` stays near 1/2; the ``T4`` threshold dotted."""
    step, q, st = data.step, data.q, data.stages
    _lines(ax, step, q.s21, S21_COLOR, batch=data.batch, quantiles=quantiles, log=True, lw=1.2)
    _lines(ax, step, q.s11, S11_COLOR, batch=data.batch, quantiles=quantiles, log=True, lw=1.6)
    ax.set_yscale("log")
    thr = st.s21_threshold * float(np.median(q.s21[0]))
    ax.axhline(thr, color="0.45", lw=0.9, ls=":", zorder=1)
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(st, step))
    lo = max(float(np.min(np.maximum(q.s21, TINY))), 1e-300)
    ax.set_ylim(lo ** 1.04 if lo < 1 else lo / 2, 3.0)
    ax.set_title("(c) softmax outputs")
    mark_stages(ax, data.times())
    # the curves leave the lower left empty (s_{i,21} decays late): the legend goes there
    _legend(ax, [_proxy(S11_COLOR, r"$s_{i,11}$: signal query on signal key", band=data.batch),
                 _proxy(S21_COLOR, r"$s_{i,21}$: noise query on signal key", band=data.batch),
                 _proxy("0.45", f"{st.s21_threshold:g} x initial $s_{{i,21}}$ (T4)", ls=":", lw=1.2)],
            loc="lower left")
    return ax


def pair_panel(ax, data: FigureData, *, ax_signal=None, neuron: int = 0,
               color_step: float | None = None, time_scale: str = "split",
               quantiles=(0.0, 1.0), legend: bool = True):
    """(d) Query noise (solid) and key noise (dotted) of ``neuron`` over training, red
    or blue by the sign of the query noise at ``color_step`` (default ``T2``); its
    query signal ``<w_{Q,s}, mu>`` below, in ``ax_signal`` when given."""
    step, q, st = data.step, data.q, data.stages
    cs = _color_step(data, color_step)
    sign = _sign_at(q.Qn[:, :, neuron], step, cs)                 # (R, n)
    for color, s in ((POS, 1), (NEG, -1)):
        _lines(ax, step, q.Qn[:, :, neuron][:, sign == s], color, batch=data.batch,
               quantiles=quantiles, lw=1.5)
        _lines(ax, step, q.Kn[:, :, neuron][:, sign == s], color, batch=data.batch,
               quantiles=quantiles, lw=1.3, ls=":")
    ax.axhline(0, color="0.6", lw=0.7, zorder=1)
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(st, step),
                  label=ax_signal is None)
    ax.set_title(rf"(d) neuron {neuron}: noise pairs, coloured by sign at step {cs:g}")
    mark_stages(ax, data.times())
    if legend:
        _legend(ax, [_proxy("0.2", r"query noise $\langle w_{Q,s}, y_i\xi_i\rangle$"),
                     _proxy("0.2", r"key noise $\langle w_{K,s}, y_i\xi_i\rangle$", ls=":")],
                loc="upper left", bbox_to_anchor=(0.0, 0.88))
    if ax_signal is not None:
        Qs = q.Qs[:, :, neuron]                                    # (T, R)
        if data.batch:   # signs differ between runs: show each run's signal by its final sign
            Qs = Qs * np.where(Qs[-1] < 0, -1.0, 1.0)
        _lines(ax_signal, step, Qs, SIGNAL_COLOR, batch=data.batch, quantiles=quantiles, lw=2)
        ax_signal.axhline(0, color="0.6", lw=0.7, zorder=1)
        set_time_axis(ax_signal, step[-1], scale=time_scale, early=early_window(st, step))
        ax_signal.set_ylabel(r"$\langle w_{Q,%d}, \mu\rangle$" % neuron)
        ax_signal.text(0.01, 0.92, "query signal" + (" x its final sign" if data.batch else ""),
                       transform=ax_signal.transAxes, va="top", fontsize=11)
        mark_stages(ax_signal, data.times(), labels=False)
        ax.tick_params(labelbottom=False)
    return ax


def loss_panel(ax, data: FigureData, *, time_scale: str = "split", quantiles=(0.0, 1.0),
               marks: bool = True):
    """Training loss, test loss and test error (log scale), ``log 2`` marked on the
    right edge, stage times marked (unless ``marks`` is false)."""
    h, step, st = data.history, data.step, data.stages
    lines = (("train_loss", "black", "-", "train loss"), ("test_loss", POS, "-", "test loss"),
             ("test_error", "tab:orange", "--", "test error"))
    for name, color, ls, _ in lines:
        _lines(ax, step, h[name], color, batch=data.batch, quantiles=quantiles, lw=1.5, ls=ls,
               log=True, alpha=1.0)
    ax.set_yscale("log")
    ax.axhline(np.log(2), color="0.5", lw=0.7, ls=":", zorder=1)
    ax.annotate("log 2", xy=(1, np.log(2)), xycoords=("axes fraction", "data"), xytext=(4, 0),
                textcoords="offset points", va="center", ha="left", color="0.4", fontsize=11,
                annotation_clip=False)
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(st, step))
    lo = float(np.min(np.maximum(h["train_loss"], TINY)))
    ax.set_ylim(lo / 3, 2.5)
    ax.set_ylabel("loss, error")
    ax.set_title("training and test loss, test error")
    _legend(ax, [_proxy(c, lab, ls=ls, band=data.batch) for _, c, ls, lab in lines],
            loc="lower left")
    if marks:
        mark_stages(ax, data.times())
    return ax


def value_gap_panel(ax, data: FigureData, *, time_scale: str = "symlog", quantiles=(0.0, 1.0)):
    """Stage I on a slide: ``Vn_i - Vs`` per sample turns positive by ``T1``."""
    step, q = data.step, data.q
    _lines(ax, step, q.value_gap, POS, batch=data.batch, quantiles=quantiles, lw=1.3)
    ax.axhline(0, color="0.4", lw=0.8, zorder=1)
    ax.set_yscale("symlog", linthresh=1e-2, linscale=0.7)
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(data.stages, step))
    ax.set_title(r"I. value noise minus signal $\langle \bar v, y_i\xi_i\rangle - \langle \bar v, \mu\rangle$")
    return ax


def alignment_panel(ax, data: FigureData, *, time_scale: str = "symlog", quantiles=(0.0, 1.0)):
    """Stage II on a slide: the fraction of pairs ``(Qn_si, Kn_si)`` sharing a sign."""
    step, q = data.step, data.q
    same = ((np.sign(q.Qn) == np.sign(q.Kn)) & (q.Qn != 0)).mean(axis=(2, 3))   # (T, R)
    _lines(ax, step, same, "tab:red", batch=data.batch, quantiles=quantiles, lw=2)
    ax.set_ylim(0, 1.12)
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(data.stages, step))
    ax.set_title(r"II. fraction of pairs $(\langle w_{Q,s}, y_i\xi_i\rangle, \langle w_{K,s}, y_i\xi_i\rangle)$ sharing a sign",
                 fontsize=11.5)
    return ax


def signal_panel(ax, data: FigureData, *, time_scale: str = "symlog", quantiles=(0.0, 1.0)):
    """Stage III on a slide: query signals (solid) and key signals (dashed) of every
    neuron, red or blue by their final sign, settling on the majority votes; for a
    batch, the fraction of signals that already have their final sign."""
    step, q = data.step, data.q
    if data.batch:
        x = np.concatenate([q.Qs, q.Ks], axis=2)                     # (T, R, 2 m_k)
        done = (np.sign(x) == np.sign(x[-1])).mean(-1)               # (T, R)
        _lines(ax, step, done, POS, batch=True, quantiles=quantiles, lw=2)
        ax.set_ylim(0, 1.12)
        title = r"III. fraction of signals $\langle w_{Q,s}, \mu\rangle$, $\langle w_{K,s}, \mu\rangle$ at their final sign"
    else:
        for x, ls in ((q.Qs, "-"), (q.Ks, "--")):
            fin = np.sign(x[-1])                                     # (R, m_k)
            for color, s in ((POS, 1), (NEG, -1)):
                _lines(ax, step, x[:, fin == s], color, batch=False, ls=ls, lw=1.1)
        ax.axhline(0, color="0.4", lw=0.8, zorder=1)
        start = np.abs(np.concatenate([q.Qs[0].ravel(), q.Ks[0].ravel()]))
        ax.set_yscale("symlog", linthresh=float(np.quantile(start, 0.9)) or 1e-12, linscale=1.5)
        title = r"III. query (solid) and key (dashed) signals $\langle w_{Q,s}, \mu\rangle$, $\langle w_{K,s}, \mu\rangle$"
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(data.stages, step))
    ax.set_title(title, fontsize=11.5)
    return ax


def s21_panel(ax, data: FigureData, *, time_scale: str = "symlog", quantiles=(0.0, 1.0)):
    """Stage IV on a slide: ``s_{i,21}`` collapses while ``s_{i,11}`` stays."""
    step, q = data.step, data.q
    _lines(ax, step, q.s21, S21_COLOR, batch=data.batch, quantiles=quantiles, log=True)
    _lines(ax, step, q.s11, S11_COLOR, batch=data.batch, quantiles=quantiles, log=True, lw=1.6)
    ax.set_yscale("log")
    lo = max(float(np.min(np.maximum(q.s21, TINY))), 1e-300)
    ax.set_ylim(lo ** 1.04 if lo < 1 else lo / 2, max(10.0, lo ** -0.12))   # room for names
    from matplotlib.ticker import FixedLocator, NullLocator
    ax.yaxis.set_major_locator(FixedLocator(decade_ticks(lo, 1.0)))         # none above 1
    ax.yaxis.set_minor_locator(NullLocator())
    set_time_axis(ax, step[-1], scale=time_scale, early=early_window(data.stages, step))
    ax.set_title(r"IV. softmax: $s_{i,21}$ (purple) collapses, $s_{i,11}$ (green) stays")
    return ax


def _color_step(data: FigureData, color_step):
    if color_step is not None:
        return float(data.step[int(np.clip(np.searchsorted(data.step, color_step), 0,
                                           data.step.size - 1))])
    t2 = np.asarray(data.stages.T2, float)
    cs = float(np.nanmedian(t2)) if np.isfinite(t2).any() else float(data.step[-1])
    return float(data.step[int(np.clip(np.searchsorted(data.step, cs), 0, data.step.size - 1))])


# ---------------------------------------------------------------- figures
def stages_figure(history: History | FigureData, *, neuron: int = 0,
                  color_step: float | None = None, run: int | None = None, fig=None,
                  time_scale: str = "split", quantiles=(0.0, 1.0)):
    """The four-panel figure of the module doc; returns the figure drawn into.

    ``neuron``: the query/key neuron of panels (a), (d). ``color_step``: the step whose
    query-noise sign colours them (default: the detected ``T2``, when the pairs have
    just aligned). ``run``: one run of a batch (default: all, as bands). ``fig``: a
    ``Figure`` or ``SubFigure`` to draw into (default: a new 12 x 8.4 in figure).
    """
    data = figure_data(history, run)
    data.two_patches("stages figure")
    m_k = data.history.config.m_k
    if not 0 <= neuron < m_k:
        raise ValueError(f"neuron must be between 0 and {m_k - 1}, got {neuron}")
    with style():
        fig = new_figure((12, 8.4)) if fig is None else fig
        # fixed margins: constrained layout costs ~0.7 s a figure
        gs = fig.add_gridspec(2, 2, left=0.07, right=0.985, bottom=0.075, top=0.9,
                              wspace=0.2, hspace=0.36)
        a, b, c = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, 0])
        sub = gs[1, 1].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
        d, d_sig = fig.add_subplot(sub[0]), fig.add_subplot(sub[1])
        key_noise_panel(a, data, neuron=neuron, color_step=color_step, quantiles=quantiles)
        value_panel(b, data, quantiles=quantiles)
        softmax_panel(c, data, time_scale=time_scale, quantiles=quantiles)
        pair_panel(d, data, ax_signal=d_sig, neuron=neuron, color_step=color_step,
                   time_scale=time_scale, quantiles=quantiles)
        fig.suptitle(config_title(data.history, quantiles))
    return fig


def loss_figure(history: History | FigureData, *, run: int | None = None, ax=None,
                time_scale: str = "split", quantiles=(0.0, 1.0)):
    """Train and test loss and test error (one Axes); returns the figure drawn into.
    ``ax``: an Axes to draw into (default: a new 8 x 4.8 in figure)."""
    data = figure_data(history, run)
    with style():
        if ax is None:
            fig = new_figure((8, 4.8))
            ax = fig.add_subplot(fig.add_gridspec(1, 1, left=0.1, right=0.92, bottom=0.13,
                                                  top=0.79 if data.batch else 0.85)[0])
            fig.suptitle(config_title(data.history, quantiles), fontsize=11, wrap=True)
        loss_panel(ax, data, time_scale=time_scale, quantiles=quantiles)
    return ax.figure


def slide_figure(history: History | FigureData, *, run: int | None = None, fig=None,
                 time_scale: str = "symlog", quantiles=(0.0, 1.0)):
    """One panel per stage, on a shared time axis with the stages shaded and named,
    each panel's own stage highlighted (16:9, 12.8 x 7.2 in). Returns the figure."""
    data = figure_data(history, run)
    data.two_patches("slide figure")
    with style():
        fig = new_figure((12.8, 7.2)) if fig is None else fig
        lines = 2 + data.batch                                      # suptitle lines
        gs = fig.add_gridspec(2, 2, left=0.065, right=0.985, bottom=0.085,
                              top=0.935 - 0.04 * lines, wspace=0.16, hspace=0.38)
        panels = (value_gap_panel, alignment_panel, signal_panel, s21_panel)
        times = {k: float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan
                 for k, v in data.times().items()}
        for k, (panel, cell) in enumerate(zip(panels, gs)):
            ax = fig.add_subplot(cell)
            panel(ax, data, time_scale=time_scale, quantiles=quantiles)
            shade_stages(ax, data.step, times, highlight=k)
        title = "The four stages of SignGD training\n" + config_title(data.history, quantiles)
        fig.suptitle(title, fontsize=12.5, y=0.99, va="top")
    return fig


def pairs_figure(history: History | FigureData, *, run: int = 0, fig=None):
    """Two close-ups of run ``run``; returns the figure drawn into.

    (a) Stage II: an at-risk pair (``|Qn + Kn|`` below one step at its Stage II start)
    oscillating with period 2, next to an ordinary pair that aligns. (b) Stage IV: a
    minority pair (aligned sign against its neuron's final query signal) whose key and
    then query noise flip, over that neuron's query signal.
    """
    data = figure_data(history, run)
    data.two_patches("pairs figure")
    q, st, step = data.q, data.stages, data.step
    with style():
        fig = new_figure((12, 4.8)) if fig is None else fig
        gs = fig.add_gridspec(1, 2, left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.2)
        left = fig.add_subplot(gs[0])
        early = step <= max(60, 1.2 * float(np.nan_to_num(st.T2[0], nan=step[-1] / 10)))
        stuck = np.argwhere(st.oscillating[0])
        safe = np.argwhere(~st.at_risk[0] & (st.pair_align_step[0] > st.T1[0]))
        shown = [(tuple(stuck[0]), "tab:orange", "at-risk pair, oscillates")] if len(stuck) else []
        if len(safe):
            shown.append((tuple(safe[0]), "0.35", "ordinary pair, aligns"))
        entries = []
        for (s, i), color, label in shown:
            left.plot(step[early], q.Qn[early, 0, s, i], color=color, lw=1.8)
            left.plot(step[early], q.Kn[early, 0, s, i], color=color, lw=1.8, ls=":")
            entries.append(_proxy(color, f"{label} ($s$={s}, $i$={i})"))
        entries += [_proxy("0.2", "query noise"), _proxy("0.2", "key noise", ls=":")]
        left.axhline(0, color="0.6", lw=0.7)
        left.set_xlim(0, step[early][-1])
        left.set_xlabel("step")
        left.set_title("(a) Stage II close-up: a period-2 pair")
        mark_stages(left, data.times(("T1", "T2")))
        if entries:
            _legend(left, entries, loc="best")

        sub = gs[1].subgridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
        right, sig = fig.add_subplot(sub[0]), fig.add_subplot(sub[1])
        final = np.sign(q.Qs[-1, 0])[:, None]
        minority = np.argwhere((st.aligned_sign[0] != 0) & (st.aligned_sign[0] != final)
                               & (np.sign(q.Qn[-1, 0]) == final))
        right.set_title("(b) Stage IV close-up: a minority pair flips")
        if len(minority):
            s, i = minority[0]
            right.plot(step, q.Qn[:, 0, s, i], color=NEG, lw=2, label=f"query noise ($s$={s}, $i$={i})")
            right.plot(step, q.Kn[:, 0, s, i], color=POS, lw=2, ls=":", label="key noise")
            right.axhline(0, color="0.6", lw=0.7)
            for x, what, va in ((q.Kn[:, 0, s, i], "key", "bottom"), (q.Qn[:, 0, s, i], "query", "top")):
                cross = np.flatnonzero(np.sign(x[1:]) != np.sign(x[:-1]))
                if cross.size:
                    t = step[cross[-1] + 1]
                    right.plot([t], [0], "o", color="0.2", ms=5, zorder=4)
                    right.annotate(f"{what} flips\nat step {t}", (t, 0),
                                   xytext=(6, 8 if va == "bottom" else -8), textcoords="offset points",
                                   ha="left", va=va, fontsize=11)
            right.legend(loc="upper left", bbox_to_anchor=(0.0, 0.88))
            sig.plot(step, q.Qs[:, 0, s], color=SIGNAL_COLOR, lw=2)
            sig.axhline(0, color="0.6", lw=0.7)
            sig.text(0.01, 0.92, f"query signal of neuron {s}", transform=sig.transAxes,
                     va="top", fontsize=11)
        else:
            right.text(0.5, 0.5, "no minority pair flipped in this run", ha="center",
                       transform=right.transAxes)
        for ax in (right, sig):
            set_time_axis(ax, step[-1], scale="linear", label=ax is sig)
            mark_stages(ax, data.times(("T3", "T4")), labels=ax is right)
        right.tick_params(labelbottom=False)
        fig.suptitle(config_title(data.history), fontsize=11.5)
    return fig


PATCH_COLORS = ("tab:orange", "tab:cyan", "tab:brown", "tab:olive", "tab:pink", "tab:gray")
"""Noise patch ``j`` (cycled): none of the sign, softmax or signal colours."""


def patches_figure(history: History | FigureData, *, run: int | None = None, fig=None,
                   time_scale: str = "symlog", quantiles=(0.0, 1.0)):
    """Inputs of ``L >= 2`` patches, one colour per noise patch ``j``; returns the figure.

    (a) Value noise ``<vbar, y_i xi_ij>`` of each noise patch and the value signal over
    the first steps. (b) Attention of the signal query on each key patch,
    ``s_{i,1k}`` (solid), and of the first noise query on the signal key (dotted), log
    scale. (c) The share of (neuron, sample) pairs of each noise patch whose query and
    key noise have the same sign. Bands: median and ``quantiles`` over samples (and runs).
    """
    data = figure_data(history, run)
    q, step = data.q, data.step
    L = q.n_patches
    colors = [PATCH_COLORS[j % len(PATCH_COLORS)] for j in range(L - 1)]
    label = (lambda j: "noise patch") if L == 2 else (lambda j: f"noise patch {j + 1}")
    with style():
        fig = new_figure((15, 5.2)) if fig is None else fig
        gs = fig.add_gridspec(1, 3, left=0.055, right=0.99, bottom=0.14, top=0.8, wspace=0.24)
        a, b, c = (fig.add_subplot(cell) for cell in gs)
        early = step <= early_window(data.stages, step)
        Vn = q.per_sample(q.Vn)                                        # (T, R, n, P)
        for j in range(L - 1):
            _lines(a, step[early], Vn[early, ..., j], colors[j], batch=True, quantiles=quantiles)
        _lines(a, step[early], q.Vs[early], SIGNAL_COLOR, batch=data.batch, quantiles=quantiles,
               lw=2.2, zorder=3)
        a.set_xlim(0, step[early][-1])
        a.set_xlabel("step")
        a.set_title("(a) value noise of each patch, value signal")
        _legend(a, [_proxy(colors[j], label(j), band=True) for j in range(L - 1)]
                + [_proxy(SIGNAL_COLOR, "value signal", lw=2.2, band=data.batch)], loc="upper left")

        S = q.S                                                        # (T, R, n, L, L)
        _lines(b, step, S[..., 0, 0], S11_COLOR, batch=True, quantiles=quantiles, log=True, lw=1.6)
        for j in range(L - 1):
            _lines(b, step, S[..., 0, j + 1], colors[j], batch=True, quantiles=quantiles, log=True)
        _lines(b, step, S[..., 1, 0], S21_COLOR, batch=True, quantiles=quantiles, log=True, ls=":")
        b.set_yscale("log")
        set_time_axis(b, step[-1], scale=time_scale)
        b.set_title("(b) attention on each key patch")
        _legend(b, [_proxy(S11_COLOR, "signal query on signal key", band=True)]
                + [_proxy(colors[j], f"signal query on {label(j)}", band=True) for j in range(L - 1)]
                + [_proxy(S21_COLOR, "first noise query on signal key", ls=":", band=True)],
                loc="lower left")

        agree = q.per_sample(np.sign(q.Qn) == np.sign(q.Kn))            # (T, R, m_k, n, P)
        for j in range(L - 1):
            share = agree[..., j].mean(axis=(2, 3))                     # (T, R)
            _lines(c, step, share, colors[j], batch=data.batch, quantiles=quantiles, lw=1.8)
        c.set_ylim(0, 1.05)
        set_time_axis(c, step[-1], scale=time_scale)
        c.set_ylabel("share of pairs")
        c.set_title("(c) query and key noise share a sign")
        _legend(c, [_proxy(colors[j], label(j), band=data.batch) for j in range(L - 1)],
                loc="lower right")
        fig.suptitle(f"{L} patches: one signal patch, {L - 1} noise patches\n"
                     + config_title(data.history, quantiles), fontsize=12)
    return fig


# ---------------------------------------------------------------- saving
def save_figure(fig, path: str | os.PathLike, *, dpi: float = 150) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format its extension names
    (``.png``, ``.pdf``, ``.svg``, ``.eps``, ...); ``dpi`` sets the resolution of
    raster formats. Returns the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"figure path must end in one of {', '.join('.' + k for k in sorted(supported))} "
                         f"(got {str(path)!r})")
    metadata = {"Software": None} if fmt == "png" else None   # PNGs byte-stable across versions
    atomic_write_with(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi, metadata=metadata))
    return path


def save_stages_figure(history: History, path: str | os.PathLike, *, neuron: int = 0,
                       color_step: float | None = None, dpi: float = 150, **options) -> Path:
    """:func:`stages_figure` written to ``path`` (format from its extension)."""
    return save_figure(stages_figure(history, neuron=neuron, color_step=color_step, **options),
                       path, dpi=dpi)


def save_patches_figure(history: History, path: str | os.PathLike, *, dpi: float = 150,
                        **options) -> Path:
    """:func:`patches_figure` written to ``path`` (format from its extension)."""
    return save_figure(patches_figure(history, **options), path, dpi=dpi)


def save_loss_figure(history: History, path: str | os.PathLike, *, dpi: float = 150,
                     **options) -> Path:
    """:func:`loss_figure` written to ``path`` (format from its extension)."""
    return save_figure(loss_figure(history, **options), path, dpi=dpi)


def save_slide_figure(history: History, path: str | os.PathLike, *, dpi: float = 150,
                      **options) -> Path:
    """:func:`slide_figure` written to ``path`` (format from its extension)."""
    return save_figure(slide_figure(history, **options), path, dpi=dpi)


def save_pairs_figure(history: History, path: str | os.PathLike, *, dpi: float = 150,
                      **options) -> Path:
    """:func:`pairs_figure` written to ``path`` (format from its extension)."""
    return save_figure(pairs_figure(history, **options), path, dpi=dpi)
