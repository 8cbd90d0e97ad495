"""An animation of one run through the four stages (``python -m analysis animate``).

Each frame shows, at one recorded step,

* the plane of query noise ``Qn_si = <w_{Q,s}, y_i xi_i>`` against key noise
  ``Kn_si = <w_{K,s}, y_i xi_i>``: one dot per pair ``(s, i)`` with a short trail,
  the quadrants where a pair shares a sign shaded (Stage II moves every pair there),
  minority pairs (aligned against their neuron's final query signal) in orange (Stage
  IV sends them across to the other shaded quadrant);
* the softmax outputs ``s_{i,21}`` (Stage IV: they collapse), drawn up to that step;
* the value quantities ``Vn_i = <vbar, y_i xi_i>`` and ``Vs = <vbar, mu>`` (Stage I:
  value noise overtakes the value signal);
* a time line of the stages with a cursor, and the current stage named above.

Frames are spaced evenly on a time axis linear to 10 steps and logarithmic beyond, so
the early stages (``T1 = 4``, ``T2 = 49`` on the default run) get as many frames as
the late ones. The file is written with :class:`matplotlib.animation.PillowWriter`
(``.gif``, no system package needed) or, where ``ffmpeg`` is on the ``PATH``,
:class:`matplotlib.animation.FFMpegWriter` (``.mp4``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from simulator import History

from .figures import (POS, S21_COLOR, SHADE, SIGNAL_COLOR, STAGE_LABELS, STAGE_NAMES,
                      STAGE_TIMES, STYLE, TINY, figure_data, plain_log_ticks, stage_index)

MINORITY, MAJORITY = "tab:orange", "0.35"
LINTHRESH_STEPS = 10
"""The time axis is linear up to this many steps and logarithmic beyond."""
FORMATS = (".gif", ".mp4")


def _time_coordinate(t: np.ndarray) -> np.ndarray:
    """Position on the time axis: linear to 10 steps, logarithmic beyond."""
    t = np.asarray(t, dtype=float)
    L = LINTHRESH_STEPS
    return np.where(t < L, t / L, 1 + np.log10(np.maximum(t, L) / L))


def frame_records(step: np.ndarray, frames: int) -> np.ndarray:
    """Indices of ``frames`` records (fewer if the run has fewer), spaced evenly on the
    time axis of :func:`_time_coordinate`, first and last record included, increasing."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    u = _time_coordinate(step)
    picked = np.array([0])
    for density in (1, 2, 4, 8, 16, 64):
        grid = np.linspace(u[0], u[-1], density * frames)
        picked = np.unique(np.clip(np.searchsorted(u, grid), 0, step.size - 1))
        if picked.size >= frames:
            break
    if picked.size > frames:
        picked = picked[np.unique(np.round(np.linspace(0, picked.size - 1, frames)).astype(int))]
    return picked


class StageAnimation:
    """The figure of the module doc for run 0 of ``history``, and :meth:`draw` to show
    record ``k`` in it. ``trail``: records of history drawn behind each pair's dot."""

    def __init__(self, history: History, *, trail: int = 6, max_lines: int = 32,
                 figsize=(12.8, 6.4)):
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter

        self.data = data = figure_data(history)
        data.two_patches("animation")
        q, st = data.q, data.stages
        self.step = step = data.step
        self.times = {k: float(getattr(st, k)[0]) for k in STAGE_TIMES}
        self.stage = stage_index(self.times, step)                  # (T,)
        self.trail = trail
        self._shown: list[int] = []
        self.Qn = q.Qn[:, 0].reshape(step.size, -1)                 # (T, m_k n)
        self.Kn = q.Kn[:, 0].reshape(step.size, -1)
        final = np.sign(q.Qs[-1, 0])[:, None]                        # (m_k, 1)
        aligned = st.aligned_sign[0]                                 # (m_k, n)
        self.minority = ((aligned != 0) & (aligned != final)).ravel()
        n_show = min(q.s21.shape[-1], max_lines)
        self.s21 = np.maximum(q.s21[:, 0, :n_show], TINY)            # (T, n_show)
        self.Vn = q.Vn[:, 0, :n_show]
        self.Vs = q.Vs[:, 0]

        with matplotlib.rc_context(STYLE):
            self.fig = fig = Figure(figsize=figsize)
            FigureCanvasAgg(fig)   # one canvas for every frame: its renderer caches text layout
            gs = fig.add_gridspec(3, 2, left=0.075, right=0.985, bottom=0.09, top=0.83,
                                  width_ratios=(1, 1.25), height_ratios=(1, 1, 0.32),
                                  wspace=0.2, hspace=0.45)
            # (Qn, Kn) plane
            a = self.plane = fig.add_subplot(gs[:, 0])
            lim = 1.1 * max(np.abs(self.Qn).max(), np.abs(self.Kn).max(), 1e-12)
            lin = float(np.median(np.abs(np.concatenate([self.Qn[0], self.Kn[0]])))) or lim / 100
            for ax_set in (a.set_xscale, a.set_yscale):
                ax_set("symlog", linthresh=lin, linscale=1.0)
            a.set(xlim=(-lim, lim), ylim=(-lim, lim))
            a.fill_between([0, lim], 0, lim, color="0.9", lw=0, zorder=0)
            a.fill_between([-lim, 0], -lim, 0, color="0.9", lw=0, zorder=0)
            a.text(0.98, 0.515, "same sign", transform=a.transAxes, ha="right", va="bottom",
                   color="0.4", fontsize=11)
            a.text(0.02, 0.485, "same sign", transform=a.transAxes, ha="left", va="top",
                   color="0.4", fontsize=11)
            a.axhline(0, color="0.6", lw=0.7, zorder=1)
            a.axvline(0, color="0.6", lw=0.7, zorder=1)
            a.set_xlabel(r"query noise $\langle w_{Q,s}, y_i\xi_i\rangle$")
            a.set_ylabel(r"key noise $\langle w_{K,s}, y_i\xi_i\rangle$")
            a.set_title(f"noise pairs (s, i), one dot each (linear within ±{lin:.2g})", fontsize=12)
            fmt = FuncFormatter(lambda x, _: f"{x:g}")
            a.xaxis.set_major_formatter(fmt)
            a.yaxis.set_major_formatter(fmt)
            colors = np.where(self.minority, MINORITY, MAJORITY)
            self.tails = LineCollection([], colors=list(colors), lw=1.2, alpha=0.5, zorder=2)
            a.add_collection(self.tails)
            self.dots = a.scatter(self.Qn[0], self.Kn[0], c=list(colors), s=22, zorder=3,
                                  edgecolors="white", linewidths=0.4)
            a.scatter([], [], c=MINORITY, s=30, label="minority pair (flips in Stage IV)")
            a.scatter([], [], c=MAJORITY, s=30, label="majority pair")
            a.legend(loc="upper left", fontsize=11, framealpha=0.9)

            # s_{i,21} and the value quantities, drawn up to the current step
            x_end = step[-1]
            self.soft = s = fig.add_subplot(gs[0, 1])
            self.val = v = fig.add_subplot(gs[1, 1], sharex=s)
            self.line_ax = tl = fig.add_subplot(gs[2, 1], sharex=s)
            self.s21_lines = s.plot(step[:1], self.s21[:1], color=S21_COLOR, lw=1.3)
            s.set_yscale("log")
            low = float(self.s21.min())
            s.set_ylim(low ** 1.05 if low < 1 else 0.1, 2.0)
            plain_log_ticks(s.yaxis, low)
            s.set_title(r"softmax $s_{i,21}$: noise query on signal key", fontsize=12)
            self.vn_lines = v.plot(step[:1], self.Vn[:1], color=POS, lw=1.3)
            (self.vs_line,) = v.plot(step[:1], self.Vs[:1], color=SIGNAL_COLOR, lw=2.2)
            v.set_yscale("symlog", linthresh=1e-2, linscale=0.8)
            v.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            top = 1.3 * max(np.abs(self.Vn).max(), np.abs(self.Vs).max(), 1e-2)
            v.set_ylim(-0.05, top)
            v.set_title(r"value noise $\langle \bar v, y_i\xi_i\rangle$ (red), "
                        r"value signal $\langle \bar v, \mu\rangle$ (black)", fontsize=12)
            for ax in (s, v, tl):
                ax.set_xscale("symlog", linthresh=LINTHRESH_STEPS, linscale=0.6)
                ax.set_xlim(0, x_end)
            tl.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            for ax in (s, v):
                ax.tick_params(labelbottom=False)
            # the stage time line
            tl.set_ylim(0, 1)
            tl.set_yticks([])
            tl.spines["left"].set_visible(False)
            cuts = np.flatnonzero(np.diff(self.stage)) + 1
            for a0, a1 in zip(np.r_[0, cuts], np.r_[cuts, step.size - 1]):
                k = int(self.stage[a0])
                tl.axvspan(step[a0], step[a1], color=SHADE[k % 2], lw=0)
                mid = np.sqrt(max(step[a0], 1) * max(step[a1], 1)) if step[a1] > 10 else \
                    (step[a0] + step[a1]) / 2
                tl.text(mid, 0.5, STAGE_LABELS[k], ha="center", va="center", fontsize=11,
                        color="0.25", fontweight="bold")
            tl.set_xlabel("step (log scale beyond 10)")
            self.cursors = [ax.axvline(0, color="0.2", lw=1.2, zorder=5) for ax in (s, v, tl)]
            self.title = fig.text(0.5, 0.98, "", ha="center", va="top", fontsize=17,
                                  fontweight="bold")
            # per-frame texts are plain text: mathtext is parsed again on every draw
            self.subtitle = fig.text(0.985, 0.915, "", ha="right", va="top", fontsize=12,
                                     color="0.25")
            self.dynamic = [self.tails, self.dots, *self.s21_lines, *self.vn_lines, self.vs_line,
                            *self.cursors, self.title, self.subtitle]
            self._background = None
            cfg = data.history.config
            fig.text(0.015, 0.915, f"{cfg.optimizer}, $n$={cfg.n}, $s$={cfg.s}, "
                     f"$\\|\\mu\\|$={cfg.mu_norm:g}, $\\sigma_0$={cfg.sigma_0:g}, "
                     f"$\\eta$={cfg.eta:g}, seed {int(data.history['seeds'][0])}",
                     ha="left", va="top", fontsize=12, color="0.25")

    def stage_text(self, k: int) -> str:
        """The title of record ``k``: its stage, by :func:`~analysis.figures.stage_index`."""
        return f"{STAGE_NAMES[int(self.stage[k])]}"

    def start_blitting(self, dpi: float) -> None:
        """Render the static parts once at ``dpi``; from then on :meth:`draw` paints
        only the moving artists over that background (ten times faster a frame)."""
        self.fig.set_dpi(dpi)
        for a in self.dynamic:
            a.set_animated(True)
        self.fig.canvas.draw()
        self._background = self.fig.canvas.copy_from_bbox(self.fig.bbox)

    def draw(self, k: int) -> None:
        """Show record ``k``; each trail runs back over the last ``trail`` records shown."""
        step = self.step
        self._shown = (self._shown + [int(k)])[-(self.trail + 1):]
        idx = np.array(self._shown)
        pts = np.stack([self.Qn[idx], self.Kn[idx]], -1)            # (len, P, 2)
        self.tails.set_segments(list(np.transpose(pts, (1, 0, 2))))
        self.dots.set_offsets(np.c_[self.Qn[k], self.Kn[k]])
        for i, line in enumerate(self.s21_lines):
            line.set_data(step[:k + 1], self.s21[:k + 1, i])
        for i, line in enumerate(self.vn_lines):
            line.set_data(step[:k + 1], self.Vn[:k + 1, i])
        self.vs_line.set_data(step[:k + 1], self.Vs[:k + 1])
        for c in self.cursors:
            c.set_xdata([step[k], step[k]])
        reached = "   ".join(f"{n} = {t:g}" + (" ✓" if step[k] >= t else "")
                             for n, t in self.times.items() if np.isfinite(t))
        self.title.set_text(f"{self.stage_text(k)}   (step {step[k]})")
        self.subtitle.set_text(reached)
        if self._background is not None:
            canvas = self.fig.canvas
            canvas.restore_region(self._background)
            for a in self.dynamic:
                self.fig.draw_artist(a)

    def rgba(self) -> np.ndarray:
        """The canvas as it was last painted, (height, width, 4) uint8."""
        return np.asarray(self.fig.canvas.buffer_rgba())


def _check_path(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"animation path must end in {' or '.join(FORMATS)} (got {str(path)!r})")
    return ext


def _writer(path: Path, anim: StageAnimation, fps: float, hold: float):
    """A writer for ``path``'s format and how often to repeat the last frame."""
    from matplotlib import animation

    ext = _check_path(path)
    if ext == ".mp4":
        if not animation.writers.is_available("ffmpeg"):
            raise ValueError("writing .mp4 needs ffmpeg on the PATH, which was not found; "
                             "write a .gif instead")
        return animation.FFMpegWriter(fps=fps), int(round(hold * fps))

    class BlitPillowWriter(animation.PillowWriter):
        """Pillow's GIF writer, taking each frame from the blitted canvas (not a full
        redraw) and showing the last one ``hold`` s longer."""

        def grab_frame(self, **savefig_kwargs):
            from PIL import Image
            self._frames.append(Image.fromarray(anim.rgba()).convert("RGB"))

        def finish(self):
            durations = [int(1000 / self.fps)] * len(self._frames)
            durations[-1] += int(1000 * hold)
            self._frames[0].save(self.outfile, save_all=True, append_images=self._frames[1:],
                                 duration=durations, loop=0)

    return BlitPillowWriter(fps=fps), 0


def animate(history: History, path: str | os.PathLike, *, frames: int = 80, fps: float = 8,
            run: int = 0, dpi: float = 80, hold: float = 2.0) -> int:
    """Write the animation of run ``run`` of ``history`` to ``path`` (``.gif``, or
    ``.mp4`` where ffmpeg exists): ``frames`` records (fewer if the run has fewer),
    each shown ``1/fps`` s, the last held ``hold`` s longer. Returns the number of
    frames written (distinct records)."""
    path = Path(path)
    _check_path(path)
    if not 0 <= run < history.n_runs:
        raise ValueError(f"run must be between 0 and {history.n_runs - 1}, got {run}")
    h = history.run(run) if history.n_runs > 1 else history
    anim = StageAnimation(h)
    writer, repeats = _writer(path, anim, fps, hold)
    records = frame_records(anim.step, frames)
    if repeats == 0:
        anim.start_blitting(dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        with writer.saving(anim.fig, str(tmp), dpi):
            for k in records:
                anim.draw(int(k))
                writer.grab_frame()
            for _ in range(repeats):          # MP4: hold the last frame by repeating it
                writer.grab_frame()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return int(records.size)


def save_frame(history: History, path: str | os.PathLike, *, step: float, run: int = 0,
               frames: int = 80, dpi: float = 100) -> Path:
    """The frame of :func:`animate` at the first record at or after ``step``, with its
    trails, written as a figure (format from the extension, as
    :func:`analysis.figures.save_figure`)."""
    from .figures import save_figure

    h = history.run(run) if history.n_runs > 1 else history
    anim = StageAnimation(h)
    k = int(np.clip(np.searchsorted(anim.step, step), 0, anim.step.size - 1))
    records = frame_records(anim.step, frames)
    for j in [*records[records < k][-anim.trail:], k]:   # the trails of the animation
        anim.draw(int(j))
    return save_figure(anim.fig, path, dpi=dpi)
