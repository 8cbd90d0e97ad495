"""Real digits in the two-patch setting (``simulator.digits``, ``examples/digits.py``)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simulator import SimulationConfig, train
from simulator.config import ConfigError
from simulator.digits import (PIXELS, DigitsData, DigitsUnavailableError, build_digits_problem,
                              digits_config, digits_data, draw_digits, load_digit_images,
                              train_digits)
from simulator.initialization import initial_weights
from simulator.full import FullEngine
from simulator.model import loss_and_gradient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def images():
    pytest.importorskip("sklearn")
    return load_digit_images()


def data(**changes):
    return DigitsData(**{**dict(classes=(3, 8), n_train=20, n_test=30, sigma_p=0.5, s=5,
                                noise_dim=100_000), **changes})


def model(**changes):
    return SimulationConfig(**{**dict(m_k=3, m_v=3, sigma_0=0.05, eta=1e-3, steps=20,
                                      seed=4), **changes})


# ---------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------

def test_shapes_labels_and_class_balance(images):
    run = draw_digits(data(), seed=0, images=images)
    assert run.x1.shape == (20, PIXELS) and run.test_x1.shape == (30, PIXELS)
    assert run.noise.support.shape == (20, 5) and run.test_noise.support.shape == (30, 5)
    np.testing.assert_array_equal(run.y, [1.0] * 10 + [-1.0] * 10)
    np.testing.assert_array_equal(run.test_y, [1.0] * 15 + [-1.0] * 15)
    _, labels = images
    # y = +1 is classes[0] = 3, y = -1 is classes[1] = 8, in both sets
    np.testing.assert_array_equal(labels[run.index], np.where(run.y > 0, 3, 8))
    np.testing.assert_array_equal(labels[run.test_index], np.where(run.test_y > 0, 3, 8))
    assert not set(run.index) & set(run.test_index), "held-out images must not be trained on"
    assert np.unique(run.index).size == 20 and np.unique(run.test_index).size == 30


def test_signal_patch_is_centered_and_scaled(images):
    run = draw_digits(data(image_norm=2.5), seed=1, images=images)
    pixels, _ = images
    np.testing.assert_allclose(np.linalg.norm(run.x1, axis=1), 2.5, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(run.test_x1, axis=1), 2.5, rtol=1e-12)
    # x_1 is the raw image minus the midpoint of the two training class means, rescaled
    a = pixels[run.index]
    center = 0.5 * (a[:10].mean(0) + a[10:].mean(0))
    for i in (0, 13):
        direction = (a[i] - center) / np.linalg.norm(a[i] - center)
        np.testing.assert_allclose(run.x1[i], 2.5 * direction, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(run.mu, 0.5 * (run.x1[:10].mean(0) - run.x1[10:].mean(0)),
                               rtol=1e-12)


def test_noise_follows_the_data_model(images):
    run = draw_digits(data(n_train=200, n_test=40, s=30, sigma_p=2.0, noise_dim=50_000),
                      seed=2, images=images)
    support, values = run.noise.support, run.noise.values
    assert (support >= PIXELS).all() and (support < PIXELS + 50_000).all()
    assert (np.diff(support, axis=1) > 0).all(), "supports must be sorted and distinct"
    # 6000 N(0, 4) entries: the sample standard deviation within 5 standard errors
    assert abs(values.std() / 2.0 - 1) < 5 / np.sqrt(2 * values.size)
    dense = draw_digits(data(noise="dense", noise_dim=300), seed=2, images=images)
    np.testing.assert_array_equal(dense.noise.support[3], np.arange(PIXELS, PIXELS + 300))
    for quiet in (data(noise="none"), data(sigma_p=0.0)):
        assert draw_digits(quiet, seed=2, images=images).noise.support.shape == (20, 0)


def test_noise_levels_share_split_supports_and_directions(images):
    low = draw_digits(data(sigma_p=0.5), seed=3, images=images)
    high = draw_digits(data(sigma_p=2.0), seed=3, images=images)
    np.testing.assert_array_equal(low.index, high.index)
    np.testing.assert_array_equal(low.noise.support, high.noise.support)
    np.testing.assert_allclose(high.noise.values, 4.0 * low.noise.values, rtol=1e-15)
    np.testing.assert_allclose(high.test_noise.values, 4.0 * low.test_noise.values, rtol=1e-15)


def test_determinism_and_seed_dependence(images):
    a = draw_digits(data(), seed=7, images=images)
    b = draw_digits(data(), seed=7, images=images)
    c = draw_digits(data(), seed=8, images=images)
    for name in ("x1", "y", "test_x1", "mu", "index", "test_index"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.noise.values, b.noise.values)
    assert not np.array_equal(a.index, c.index)
    assert not np.array_equal(a.noise.support, c.noise.support)


def test_inputs_are_not_mutated(images):
    pixels, labels = images
    before = pixels.copy(), labels.copy()
    build_digits_problem(data(), model(n_seeds=2), images=images)
    np.testing.assert_array_equal(pixels, before[0])
    np.testing.assert_array_equal(labels, before[1])


# ---------------------------------------------------------------------------
# the training problem
# ---------------------------------------------------------------------------

def test_patch_placement_in_the_basis(images):
    problem = build_digits_problem(data(), model(n_seeds=2), images=images)
    assert problem.config.d == PIXELS + 100_000 and problem.config.n == 20
    for r in range(2):
        run = draw_digits(data(), seed=4 + r, images=images)
        coords = problem.coords[r]
        np.testing.assert_array_equal(coords[:PIXELS], np.arange(PIXELS))   # pixels first
        X = problem.X[r]                                                    # (n, L, D)
        np.testing.assert_array_equal(X[:, 0, :PIXELS], run.x1)
        assert not X[:, 0, PIXELS:].any(), "the signal patch lives on the pixels only"
        assert not X[:, 1, :PIXELS].any(), "the noise patch lives off the pixels"
        for i in (0, 19):
            cols = np.flatnonzero(X[i, 1])
            np.testing.assert_array_equal(coords[cols], run.noise.support[i])
            np.testing.assert_array_equal(X[i, 1, cols], run.noise.values[i])
        real = coords < problem.config.d
        np.testing.assert_array_equal(
            problem.W0[r][:, real],
            initial_weights(4 + r, problem.layout.M, coords[real], 0.05))


def test_batch_run_equals_single_run(images):
    batch = build_digits_problem(data(), model(n_seeds=3), images=images)
    single = build_digits_problem(data(), model(seed=6), images=images)
    D = single.D
    np.testing.assert_array_equal(batch.X[2][..., :D], single.X[0])
    np.testing.assert_array_equal(batch.W0[2][:, :D], single.W0[0])
    np.testing.assert_array_equal(batch.test_frozen[2], single.test_frozen[0])


def test_held_out_projections_against_dense_computation(images):
    """W x of every test input, from the problem's split storage, equals the plain
    product with the initial weights of every coordinate the input touches."""
    d = data(n_test=10)
    problem = build_digits_problem(d, model(), images=images)
    run = draw_digits(d, seed=4, images=images)
    engine = FullEngine(problem)
    proj = engine.held_out_projections(engine.held_out_snapshot(problem.W0)[None], 0)  # (1, n_test, L, M)
    M = problem.layout.M
    W_pix = initial_weights(4, M, np.arange(PIXELS), 0.05)              # (M, 64)
    np.testing.assert_allclose(proj[0, :, 0, :], run.test_x1 @ W_pix.T, rtol=1e-12, atol=1e-15)
    for i in range(10):
        W_xi = initial_weights(4, M, run.test_noise.support[i], 0.05)   # (M, s)
        np.testing.assert_allclose(proj[0, i, 1, :], W_xi @ run.test_noise.values[i],
                                   rtol=1e-12, atol=1e-15)


def test_signal_quantities_project_on_the_class_mean_direction(images):
    problem = build_digits_problem(data(), model(), images=images)
    run = draw_digits(data(), seed=4, images=images)
    W = problem.W0
    engine = FullEngine(problem)
    snap = engine.snapshot(W, loss_and_gradient(W, problem.X, problem.y, problem.layout))
    q = {name: value[0] for name, value in engine.record({k: v[None] for k, v in snap.items()}).items()}
    lay = problem.layout
    w_mu = W[0][:, :PIXELS] @ run.mu                                    # (M,) <w, mu>
    np.testing.assert_allclose(q["Vs"][0], w_mu[lay.Vp].mean() - w_mu[lay.Vm].mean(), rtol=1e-12)
    np.testing.assert_allclose(q["Qs"][0], w_mu[lay.Q], rtol=1e-12)
    np.testing.assert_allclose(q["Ks"][0], w_mu[lay.K], rtol=1e-12)


def test_dense_noise_test_inputs_are_all_trained(images):
    problem = build_digits_problem(data(noise="dense", noise_dim=200), model(), images=images)
    assert problem.D == PIXELS + 200
    assert problem.test_overlap_fraction[0] == 1.0
    assert not problem.test_frozen.any()


def test_training_reduces_the_loss(images):
    result = train_digits(data(sigma_p=0.0), model(steps=60, n_seeds=2), images=images)
    loss = result.history["train_loss"]
    assert (loss[-1] < 0.9 * loss[0]).all()
    assert np.isfinite(result.history["test_loss"]).all()


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("changes, match", [
    (dict(classes=(3, 12)), r"classes must be two different digits in 0\.\.9, got \(3, 12\)"),
    (dict(classes=(4, 4)), r"classes must be two different digits"),
    (dict(classes=(4,)), r"classes must be two different digits"),
    (dict(n_train=21), r"n_train must be an even integer >= 2 \(half per class\), got 21"),
    (dict(n_test=0), r"n_test must be an even integer >= 2"),
    (dict(noise="uniform"), r"noise must be one of sparse, dense, none; got 'uniform'"),
    (dict(sigma_p=-1.0), r"sigma_p must be finite and in \[0, inf\), got -1\.0"),
    (dict(image_norm=0.0), r"image_norm must be finite and in \(0, inf\), got 0\.0"),
    (dict(s=200_001, noise_dim=200_000), r"s must be an integer between 1 and noise_dim = 200000"),
    (dict(noise="dense", noise_dim=10**6), r"noise_dim must be an integer between 1 and 20000 for dense"),
])
def test_bad_parameters_raise_one_line_errors(changes, match):
    with pytest.raises(ConfigError, match=match):
        data(**changes)


def test_too_many_images_for_a_class(images):
    # digit 8 has 174 images in the bundled set
    with pytest.raises(ConfigError, match=r"n_train/2 \+ n_test/2 = 175 exceeds the 174 images of digit 8"):
        draw_digits(data(n_train=200, n_test=150), seed=0, images=images)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)          # import sklearn -> ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DigitsUnavailableError,
                       match=r'pip install "signgd-transformer-sim\[digits\]"'):
        load_digit_images()
    with pytest.raises(ImportError):                           # also an ImportError
        build_digits_problem(data(), model())


def test_example_without_the_extra_exits_with_one_line():
    # python examples/digits.py --quick, in an interpreter where import sklearn fails
    code = ("import runpy, sys; sys.modules['sklearn'] = None; "
            f"sys.path.insert(0, {str(EXAMPLES)!r}); sys.argv = ['digits.py', '--quick']; "
            f"runpy.run_path({str(EXAMPLES / 'digits.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        'python examples/digits.py: error: the digits data ships with scikit-learn, which is '
        'not installed: pip install "signgd-transformer-sim[digits]"']


def test_noise_dim_defaults_follow_the_noise_kind():
    assert DigitsData().noise_dim == 1_000_000 and DigitsData(noise="dense").noise_dim == 1_000
    dense = DigitsData(noise="dense", noise_dim=300)
    assert dense.replace(sigma_p=1.0).noise_dim == 300          # kept when the kind is kept
    assert dense.replace(noise="sparse").noise_dim == 1_000_000  # reset with the kind
    assert dense.d == PIXELS + 300


def test_digits_config_describes_the_data():
    cfg = digits_config(data(n_train=40, n_test=60, sigma_p=0.3), model(optimizer="adam"))
    assert (cfg.d, cfg.n, cfg.n_test, cfg.s, cfg.sigma_p, cfg.noise, cfg.optimizer) == \
        (PIXELS + 100_000, 40, 60, 5, 0.3, "sparse", "adam")
    assert digits_config(data(sigma_p=0.0)).noise == "none"


# ---------------------------------------------------------------------------
# the example, small
# ---------------------------------------------------------------------------

def test_quick_example_beats_chance_at_zero_noise(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    spec = importlib.util.spec_from_file_location("digits_example", EXAMPLES / "digits.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--quick", "--workers", "1", "--out", str(tmp_path)])
    # held-out accuracy is a mean over 2 seeds x 100 test digits; a coin stays below
    # the band (1/2 + 2 standard deviations) with probability 0.98, a working run is near 0.95
    for opt, acc in out["zero_noise_accuracy"].items():
        assert acc > out["band"], f"{opt}: held-out accuracy {acc:.3f} at zero noise is chance"
    assert (tmp_path / "digits.png").stat().st_size > 10_000
    assert (tmp_path / "results.csv").read_text().count("\n") == len(out["rows"]) + 1


# ---------------------------------------------------------------------------
# the data source as a config field
# ---------------------------------------------------------------------------

def test_a_digits_config_trains_as_the_digits_problem(images):
    """``data='digits'`` in the config builds the same problem as the DigitsData route,
    so the CLI, sweeps and reports serve digits runs unchanged."""
    config = digits_config(data(), model(n_seeds=2))
    assert config.data == "digits" and (config.digit_positive, config.digit_negative) == (3, 8)
    assert digits_data(config) == data()
    via_config = train(config).history
    via_data = train_digits(data(), model(n_seeds=2), images=images).history
    assert via_config.config == via_data.config
    for name in via_data.arrays:
        if name != "wall_time":
            np.testing.assert_array_equal(via_config[name], via_data[name], err_msg=name)


@pytest.mark.parametrize("changes, message", [
    (dict(engine="reduced"), r"^data='digits' needs engine='full' and coordinates='active'"),
    (dict(digit_negative=3), r"^digit_negative must differ from digit_positive=3, got 3$"),
    (dict(n=7), r"^n must be even with data='digits' \(half per class\), got 7$"),
    (dict(d=64), r"^d must be at least 65 with data='digits'"),
    (dict(label_flip=0.1), r"^label_flip=0.1 is not available with data='digits'; use 0.0$"),
    (dict(digit_positive=10), r"^digit_positive must be an integer between 0 and 9, got 10$"),
])
def test_digits_config_errors_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        SimulationConfig(data="digits", **changes)
