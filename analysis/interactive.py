"""Live sliders over the reduced engine: change a knob, watch the stages move.

:class:`LiveStages` holds a four-panel figure (Stage I's value gap, Stage II's sign
alignment, Stage IV's softmax collapse, the losses; the stages shaded) and
:meth:`LiveStages.update`, which trains the reduced engine with the given values of
``eta``, ``sigma_0``, ``s``, ``mu_norm``, ``n`` and ``optimizer`` and redraws the
panels: under 0.3 s of training (:data:`STEPS` steps, every :data:`RECORD_EVERY`-th
recorded, ``d = 10^9`` so that test inputs are fresh) and about 0.2 s of drawing on 2 cores.
It returns the time each part took and keeps the PNG of the result.

:func:`live_widgets` wraps it in ipywidgets sliders for a notebook (ipywidgets is
imported there only, so the rest works without it)::

    from analysis.interactive import live_widgets
    live_widgets()          # the last line of a notebook cell

The figure is rendered to PNG bytes and shown in an ``ipywidgets.Image``, so it
works with any notebook front end and no interactive matplotlib backend.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np

from simulator import SimulationConfig, run

from .figures import (STYLE, alignment_panel, figure_data, loss_panel, new_figure,
                      plain_log_ticks, s21_panel, shade_stages, value_gap_panel)

STEPS = 1000
"""Steps of a live run: 0.07 s for SignGD (the fused kernel), 0.25 s for Adam."""
RECORD_EVERY = 5
"""Every 5th step is recorded: the panels need no more."""
DEFAULTS = {"eta": 1e-4, "sigma_0": 0.005, "s": 20, "mu_norm": 0.05, "n": 8,
            "optimizer": "signgd"}
"""The built-in job's values of the six knobs, except ``eta = 1e-4``, twice its value:
every stage time scales as ``1/eta``, so 1,000 steps show the four stages and the
minority flips after them (the built-in job needs 2,000 for the same)."""
KNOBS = tuple(DEFAULTS)
PANELS = (value_gap_panel, alignment_panel, s21_panel, loss_panel)


def live_config(**values) -> SimulationConfig:
    """The reduced-engine config of a live run: ``DEFAULTS`` overridden by ``values``
    (any config field), validated as every config is."""
    unknown = set(values) - set(SimulationConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    fields = {"engine": "reduced", "reduced_init": "distribution", "d": 10**9,
              "steps": STEPS, "record_every": RECORD_EVERY, "n_test": 100, **DEFAULTS, **values}
    return SimulationConfig(**fields)


@dataclass(frozen=True)
class Timing:
    """Seconds spent by one :meth:`LiveStages.update`."""

    run: float        # training the reduced engine
    analysis: float   # quantities and stage detection
    draw: float       # drawing the panels and rendering the PNG

    @property
    def total(self) -> float:
        return self.run + self.analysis + self.draw

    def __str__(self) -> str:
        return (f"{self.total:.2f} s (run {self.run:.2f} s, analysis {self.analysis:.3f} s, "
                f"draw {self.draw:.2f} s)")


class LiveStages:
    """The live figure; :meth:`update` re-runs and redraws it.

    Attributes: ``fig`` (the Figure), ``axes`` (its four Axes, in the order of
    :data:`PANELS`), ``history`` and ``data`` (the last run and its
    :class:`~analysis.figures.FigureData`), ``png`` (the last rendering).
    """

    def __init__(self, *, figsize=(10.5, 6.2), dpi: float = 80):
        import matplotlib
        self.dpi = dpi
        with matplotlib.rc_context(STYLE):
            self.fig = new_figure(figsize)
            self.fig.set_dpi(dpi)
            gs = self.fig.add_gridspec(2, 2, left=0.075, right=0.95, bottom=0.1, top=0.84,
                                       wspace=0.2, hspace=0.5)
            self.axes = [self.fig.add_subplot(cell) for cell in gs]
        self.history = self.data = None
        self.png = b""

    def update(self, **values) -> Timing:
        """Train with ``values`` (see :func:`live_config`) and redraw every panel."""
        import matplotlib
        t0 = time.perf_counter()
        self.history = run(live_config(**values))
        t1 = time.perf_counter()
        self.data = data = figure_data(self.history)
        data.two_patches("live view")
        times = {k: float(v[0]) for k, v in data.times().items()}
        t2 = time.perf_counter()
        with matplotlib.rc_context(STYLE):
            for k, (ax, panel) in enumerate(zip(self.axes, PANELS)):
                ax.cla()
                panel(ax, data, time_scale="symlog", **({"marks": False} if panel is loss_panel else {}))
                shade_stages(ax, data.step, times, labels=k < 2)   # stage names on the top row
                _plain_ticks(ax)
            for ax in self.axes[:2]:
                ax.set_xlabel("")
            self.axes[3].set_title("loss and test error")
            self.fig.suptitle(self.title(), fontsize=12.5)
            self.png = self._render()
        t3 = time.perf_counter()
        return Timing(run=t1 - t0, analysis=t2 - t1, draw=t3 - t2)

    def title(self) -> str:
        """Two lines: the knobs, then the stage times and final losses."""
        cfg, h = self.history.config, self.history
        st = self.data.stages
        times = "  ".join(f"{k} = {float(getattr(st, k)[0]):g}" if np.isfinite(getattr(st, k)[0])
                          else f"{k}: none" for k in ("T1", "T2", "T3", "T4"))
        return (f"{cfg.optimizer}: $\\eta$={cfg.eta:g}, $\\sigma_0$={cfg.sigma_0:g}, $s$={cfg.s}, "
                f"$\\|\\mu\\|$={cfg.mu_norm:g}, $n$={cfg.n}   (reduced engine, {cfg.steps} steps)\n"
                f"{times};  final train loss {h['train_loss'][-1, 0]:.2g}, "
                f"test loss {h['test_loss'][-1, 0]:.3f}, test error {h['test_error'][-1, 0]:.3f}")

    def _render(self) -> bytes:
        from PIL import Image
        canvas = self.fig.canvas
        canvas.draw()
        img = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format="png", compress_level=1)    # fast: this is redrawn on every change
        return buf.getvalue()


def _plain_ticks(ax) -> None:
    """Plain-text tick labels and no minor ticks: a redraw costs half as much."""
    from matplotlib.ticker import FuncFormatter, NullLocator
    plain = FuncFormatter(lambda x, _: f"{x:g}")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            lo, hi = sorted(axis.get_view_interval())
            plain_log_ticks(axis, lo, min(hi, 1.0))           # the quantities here are <= 1
        else:
            axis.set_major_formatter(plain)
            axis.set_minor_locator(NullLocator())


def live_widgets(view: LiveStages | None = None, **initial):
    """Sliders for the six knobs over ``view`` (default: a new :class:`LiveStages`),
    starting from ``DEFAULTS`` overridden by ``initial``. Returns the ipywidgets box
    to display; each change re-runs the reduced engine and redraws the panels."""
    import ipywidgets as w

    view = view or LiveStages()
    start = {**DEFAULTS, **initial}
    style = {"description_width": "80px"}
    layout = w.Layout(width="340px")
    controls = {
        "eta": w.FloatLogSlider(value=start["eta"], base=10, min=-6, max=0, step=0.1,
                                description="eta", readout_format=".1e", style=style, layout=layout),
        "sigma_0": w.FloatLogSlider(value=start["sigma_0"], base=10, min=-4, max=-1, step=0.1,
                                    description="sigma_0", readout_format=".1e", style=style,
                                    layout=layout),
        "s": w.IntSlider(value=start["s"], min=2, max=200, step=1, description="s",
                         style=style, layout=layout),
        "mu_norm": w.FloatLogSlider(value=start["mu_norm"], base=10, min=-3, max=1.5, step=0.1,
                                    description="||mu||", readout_format=".2g", style=style,
                                    layout=layout),
        "n": w.IntSlider(value=start["n"], min=2, max=32, step=2, description="n",
                         style=style, layout=layout),
        "optimizer": w.Dropdown(value=start["optimizer"], options=_optimizers(),
                                description="optimizer", style=style, layout=layout),
    }
    image = w.Image(format="png")
    status = w.HTML()

    def redraw(_change=None):
        values = {k: c.value for k, c in controls.items()}
        try:
            timing = view.update(**values)
        except ValueError as exc:                   # e.g. a config the engine refuses
            status.value = f"<span style='color:#b00'>{exc}</span>"
            return
        image.value = view.png
        status.value = f"redrawn in {timing}"

    for c in controls.values():
        c.observe(redraw, names="value")
    redraw()
    return w.HBox([w.VBox([*controls.values(), status], layout=w.Layout(width="360px")), image])


def _optimizers() -> list[str]:
    from simulator.optimizers import REGISTRY
    return list(REGISTRY)
