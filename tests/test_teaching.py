"""Teaching: the figure API, the animation, the live view and the notebook.

* Figures honour the file's extension (checked by the file's magic bytes), return the
  Figure they drew, draw into a given Figure, SubFigure or Axes, and draw a batch of
  seeds as a median with a min-max band.
* ``python -m analysis animate`` writes a GIF of at least 50 frames (counted by Pillow).
* The live view's update re-runs the reduced engine with the given knobs and redraws
  panels whose data are the new run's; its timing is printed as a benchmark.
* The notebook is committed without outputs and runs top to bottom.
"""

import re
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from analysis import figures
from analysis.animation import frame_records
from analysis.interactive import DEFAULTS, LiveStages, live_config
from simulator import SimulationConfig, run
from workflows.analysis_cli import main

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "notebooks" / "four_stages.ipynb"
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-"}


@pytest.fixture(scope="module")
def small():
    """A small SignGD run of 60 steps (61 records), a few milliseconds."""
    return run(SimulationConfig(d=200, n=4, s=4, m_k=2, m_v=2, n_test=20, steps=60,
                                sigma_0=0.05, eta=1e-3, seed=3))


@pytest.fixture(scope="module")
def batch():
    """Three seeds of the reduced engine, one vectorized batch."""
    return run(SimulationConfig(engine="reduced", reduced_init="distribution", d=10**9, n=4, s=8,
                                m_k=2, m_v=2, n_test=20, steps=200, record_every=2,
                                n_seeds=3))


# ---------------------------------------------------------------- the figure API
@pytest.mark.parametrize("save, ext", [
    (figures.save_stages_figure, ".png"), (figures.save_stages_figure, ".pdf"),
    (figures.save_stages_figure, ".svg"), (figures.save_loss_figure, ".pdf"),
    (figures.save_loss_figure, ".svg"), (figures.save_slide_figure, ".pdf"),
    (figures.save_pairs_figure, ".svg"),
])
def test_saved_figure_has_the_format_its_extension_names(small, tmp_path, save, ext):
    path = save(small, tmp_path / f"figure{ext}")
    head = path.read_bytes()[:400]
    if ext == ".svg":
        assert head.startswith(b"<?xml") and b"<svg" in head, head[:80]
    else:
        assert head.startswith(MAGIC[ext]), head[:16]


def test_report_signatures_keep_working(small, tmp_path):
    """report.py calls save_stages_figure(history, path, neuron=..., color_step=...) and
    save_loss_figure(history, path)."""
    figures.save_stages_figure(small, tmp_path / "stages.png", neuron=1, color_step=5)
    figures.save_loss_figure(small, tmp_path / "loss.png")
    for name in ("stages.png", "loss.png"):
        assert (tmp_path / name).read_bytes()[:8] == MAGIC[".png"], name


def test_unknown_extension_is_refused_naming_the_formats(small, tmp_path):
    with pytest.raises(ValueError, match=r"figure path must end in one of .*\.pdf.*\.svg.*"
                                         r"\(got '.*stages\.txt'\)"):
        figures.save_stages_figure(small, tmp_path / "stages.txt")
    assert not (tmp_path / "stages.txt").exists()


@pytest.mark.parametrize("make", [figures.stages_figure, figures.loss_figure,
                                  figures.slide_figure, figures.pairs_figure])
def test_figure_functions_return_a_new_figure(small, make):
    fig = make(small)
    assert isinstance(fig, Figure)
    assert fig.axes, "nothing drawn"


@pytest.mark.parametrize("make", [figures.stages_figure, figures.slide_figure,
                                  figures.pairs_figure])
def test_multi_panel_figures_draw_into_a_given_figure_or_subfigure(small, make):
    fig = Figure(figsize=(20, 8))
    left, right = fig.subfigures(1, 2)
    assert make(small, fig=right) is right
    assert not left.axes and right.axes
    assert all(ax.get_figure() is right for ax in right.axes)
    other = Figure()
    assert make(small, fig=other) is other


def test_loss_figure_draws_into_a_given_axes(small):
    fig = Figure()
    a, b = fig.subplots(1, 2)
    assert figures.loss_figure(small, ax=b) is fig
    assert not a.lines
    train_line = b.lines[0]
    np.testing.assert_array_equal(train_line.get_ydata(), np.maximum(small["train_loss"][:, 0],
                                                                     figures.TINY))


@pytest.mark.parametrize("panel", [figures.key_noise_panel, figures.value_panel,
                                   figures.softmax_panel, figures.pair_panel,
                                   figures.loss_panel, figures.value_gap_panel,
                                   figures.alignment_panel, figures.signal_panel,
                                   figures.s21_panel])
def test_each_panel_draws_into_the_given_axes(small, panel):
    fig = Figure()
    ax = fig.add_subplot()
    assert panel(ax, figures.figure_data(small)) is ax
    assert ax.lines and not fig.axes[1:], panel.__name__


def test_batch_is_drawn_as_median_and_min_max_band(batch):
    """Not run 0 alone: the train-loss line is the median over runs, its band the range."""
    ax = figures.loss_figure(batch).axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3, "one band each for train loss, test loss, test error"
    L = np.maximum(batch["train_loss"], figures.TINY)                 # (T, R)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.median(L, axis=1))
    ys = bands[0].get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([ys.min(), ys.max()], [L.min(), L.max()])
    assert "3 runs (seeds 0-2)" in ax.figure.get_suptitle()


def test_batch_quantiles_and_one_run(batch):
    ax = figures.loss_figure(batch, quantiles=(0.25, 0.75)).axes[0]
    ys = ax.collections[0].get_paths()[0].vertices[:, 1]
    L = np.maximum(batch["train_loss"], figures.TINY)
    assert ys.max() <= L.max() and ys.min() >= L.min()
    assert "quantiles 0.25 to 0.75" in ax.figure.get_suptitle()
    one = figures.loss_figure(batch, run=2).axes[0]
    assert not [c for c in one.collections if isinstance(c, PolyCollection)]
    np.testing.assert_array_equal(one.lines[0].get_ydata(),
                                  np.maximum(batch["train_loss"][:, 2], figures.TINY))
    with pytest.raises(ValueError, match="run must be between 0 and 2, got 3"):
        figures.loss_figure(batch, run=3)


def test_stage_lines_are_grey_and_named_not_curve_coloured(small):
    """Each reached stage time is one dark-grey line named by a text label; no curve of
    the panel has that colour (s_11 green, s_21 purple)."""
    ax = figures.stages_figure(small).axes[2]                        # (c) softmax
    st = figures.figure_data(small).stages
    reached = {k for k in ("T1", "T2", "T3", "T4") if np.isfinite(getattr(st, k)[0])}
    marks = [ln for ln in ax.lines if ln.get_color() == figures.STAGE_COLOR]
    assert reached and len(marks) == len(reached)
    assert {ln.get_color() for ln in ax.lines} >= {figures.S11_COLOR, figures.S21_COLOR}
    assert figures.STAGE_COLOR not in (figures.S11_COLOR, figures.S21_COLOR, figures.POS,
                                       figures.NEG, figures.SIGNAL_COLOR)
    assert {t.get_text().strip() for t in ax.texts} >= reached


@pytest.mark.parametrize("step, expected", [(0, 0), (3, 0), (4, 1), (48, 1), (49, 2), (213, 3),
                                            (1130, 3), (1131, 4), (4000, 4)])
def test_stage_index_counts_the_stage_times_reached(step, expected):
    times = {"T1": 4, "T2": 49, "T3": 213, "T4": 1131}
    assert int(figures.stage_index(times, step)) == expected


def test_stage_index_never_and_overlap():
    assert list(figures.stage_index({"T1": 4, "T2": np.nan, "T3": np.nan, "T4": np.nan},
                                    [0, 10, 100])) == [0, 1, 1]
    # T4 before T3 (stages overlap): a step is in the earliest stage not yet complete,
    # as the report's stage intervals say (analysis.stages.stage_of)
    assert list(figures.stage_index({"T1": 4, "T2": 49, "T3": 3114, "T4": 1074},
                                    [100, 2000, 3500])) == [2, 2, 4]


# ---------------------------------------------------------------- the animation
def test_frame_records_are_spaced_on_a_log_time_axis():
    step = np.arange(4001)
    k = frame_records(step, 80)
    assert k.size == 80 and k[0] == 0 and k[-1] == 4000 and (np.diff(k) > 0).all()
    assert (step[k] < 49).sum() >= 15, "the early stages get frames of their own"
    assert frame_records(np.arange(31), 80).size == 31        # fewer records than frames
    with pytest.raises(ValueError, match="frames must be at least 2, got 1"):
        frame_records(step, 1)


def test_animate_writes_a_gif_of_at_least_50_frames(small, tmp_path, capsys):
    from PIL import Image

    small.save(tmp_path / "run")
    out = tmp_path / "stages.gif"
    t0 = time.perf_counter()
    assert main(["animate", str(tmp_path / "run"), "--out", str(out), "--frames", "50"]) == 0
    print(f"\nanimate: 50 frames in {time.perf_counter() - t0:.1f} s")
    assert "(50 frames)" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "GIF"
        assert im.n_frames >= 50
        assert im.size == (1024, 512)
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


@pytest.mark.parametrize("args, match", [
    (["--out", "OUT/x.avi"], r"animation path must end in \.gif or \.mp4 \(got '.*x\.avi'\)"),
    (["--frames", "1"], "frames must be at least 2, got 1"),
    (["--fps", "0"], "--fps must be positive, got 0"),
    (["--run", "2"], "run must be between 0 and 0, got 2"),
])
def test_animate_bad_input_is_one_line_exit_2(small, tmp_path, capsys, args, match):
    small.save(tmp_path / "run")
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    assert main(["animate", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m analysis: error: "), err
    assert re.search(match, err[0]), err[0]


def test_mp4_without_ffmpeg_says_so(small, tmp_path, capsys):
    from matplotlib import animation
    if animation.writers.is_available("ffmpeg"):
        pytest.skip("ffmpeg is installed here")
    small.save(tmp_path / "run")
    assert main(["animate", str(tmp_path / "run"), "--out", str(tmp_path / "a.mp4")]) == 2
    assert "needs ffmpeg on the PATH" in capsys.readouterr().err


# ---------------------------------------------------------------- the live view
def test_live_update_reruns_the_reduced_engine_and_redraws(capsys):
    view = LiveStages()
    timings = [view.update(eta=2e-4, sigma_0=0.01, s=30, mu_norm=0.1, n=6, optimizer="signgd")]
    cfg = view.history.config
    assert (cfg.engine, cfg.reduced_init, cfg.d) == ("reduced", "distribution", 10**9)
    assert (cfg.eta, cfg.sigma_0, cfg.s, cfg.mu_norm, cfg.n) == (2e-4, 0.01, 30, 0.1, 6)
    gap, align, soft, loss = view.axes
    assert len(gap.lines) == 6 + 1, "one value-gap line per sample, and the zero line"
    q = view.data.q
    fraction = ((np.sign(q.Qn) == np.sign(q.Kn)) & (q.Qn != 0)).mean(axis=(2, 3))[:, 0]
    np.testing.assert_array_equal(align.lines[0].get_ydata(), fraction)
    assert view.png[:8] == MAGIC[".png"]
    assert "signgd" in view.fig.get_suptitle() and "T1 = " in view.fig.get_suptitle()
    for values in ({"n": 10}, {"optimizer": "adam"}, {}):
        timings.append(view.update(**values))
        assert len(view.axes[0].lines) == view.history.config.n + 1
    assert view.history.config.optimizer == DEFAULTS["optimizer"]
    with capsys.disabled():       # a benchmark, not an assertion on time
        print("\nlive update (signgd, signgd n=10, adam, default): "
              + "; ".join(str(t) for t in timings))


def test_live_config_refuses_unknown_knobs_and_bad_values():
    with pytest.raises(ValueError, match="unknown config field.*: lr"):
        live_config(lr=1)
    with pytest.raises(ValueError, match="eta"):
        live_config(eta=-1.0)


def test_live_widgets_rerun_on_a_slider_change():
    widgets = pytest.importorskip("ipywidgets")
    from analysis.interactive import live_widgets

    view = LiveStages()
    box = live_widgets(view)
    controls, image = box.children
    sliders = {c.description: c for c in controls.children
               if isinstance(c, widgets.ValueWidget) and c.description}
    assert set(sliders) == {"eta", "sigma_0", "s", "||mu||", "n", "optimizer"}
    assert image.value == view.png and view.history.config.n == DEFAULTS["n"]
    sliders["n"].value = 12
    assert view.history.config.n == 12 and image.value == view.png
    assert "redrawn in" in controls.children[-1].value


# ---------------------------------------------------------------- the notebook
def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs"
        assert cell.execution_count is None, f"code cell {i} has an execution count"


def test_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    t0 = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"\nnotebook executed in {time.perf_counter() - t0:.1f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert {"image/png", "image/gif", "application/vnd.jupyter.widget-view+json"} <= kinds
