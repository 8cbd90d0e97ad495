"""The data model (``simulator.data``, ``docs/theory.md`` section 1) and the inputs the
engine builds from it (``simulator.problem``)."""

import numpy as np
import pytest

from simulator import SimulationConfig
from simulator.data import (draw_test_set, draw_training_set, expected_shared_coordinates,
                            generate_dataset, shared_coordinate_counts)
from simulator.problem import active_basis, patches_in_basis


def config(**changes):
    return SimulationConfig(**{**dict(d=500, n=6, s=20, n_test=10), **changes})


def test_supports_distinct_sorted_in_range():
    cfg = config(d=300, n=50, s=40)
    ds = draw_training_set(cfg, seed=0)
    assert ds.support.shape == (50, 40) and ds.values.shape == (50, 40)
    assert (ds.support >= 1).all() and (ds.support <= cfg.d - 1).all()
    assert (np.diff(ds.support, axis=1) > 0).all(), "supports must be sorted and distinct"
    # with 50 x 40 draws from 299 coordinates, both ends are used
    assert ds.support.min() == 1 and ds.support.max() == cfg.d - 1


def test_labels_and_noise_statistics():
    # 4000 samples x 25 entries: tolerances of 5 standard errors
    cfg = config(d=10_000, n=4000, s=25, sigma_p=2.0)
    ds = draw_training_set(cfg, seed=1)
    assert set(np.unique(ds.y)) == {-1.0, 1.0}
    assert abs(ds.y.mean()) < 5 / np.sqrt(4000)
    v = ds.values.ravel()
    assert abs(v.mean()) < 5 * 2.0 / np.sqrt(v.size)
    assert abs(v.std() / 2.0 - 1) < 5 / np.sqrt(2 * v.size)
    # ||xi||_1 ~ s sigma_p sqrt(2/pi): mean over 4000 samples, sd of one ~ 2 sqrt(25 (1-2/pi))
    sd = 2.0 * np.sqrt(25 * (1 - 2 / np.pi))
    assert abs(ds.xi_l1.mean() - 25 * 2.0 * np.sqrt(2 / np.pi)) < 5 * sd / np.sqrt(4000)
    np.testing.assert_allclose(ds.xi_l2, np.linalg.norm(ds.values, axis=1), rtol=1e-14)


def test_shared_coordinates_hand_built():
    support = np.array([[1, 2, 3], [3, 4, 5], [5, 6, 7], [8, 9, 10]])
    values = np.ones((4, 3))
    assert shared_coordinate_counts(support, values).tolist() == [1, 2, 1, 0]
    # an exact zero entry does not touch its coordinate
    values[1, 2] = 0.0                     # sample 1 no longer uses coordinate 5
    assert shared_coordinate_counts(support, values).tolist() == [1, 1, 0, 0]
    # three samples on one coordinate
    support3 = np.array([[1, 2], [2, 3], [2, 4]])
    assert shared_coordinate_counts(support3, np.ones((3, 2))).tolist() == [1, 1, 1]
    assert shared_coordinate_counts(np.zeros((3, 0), dtype=int), np.zeros((3, 0))).tolist() == [0] * 3


def test_expected_shared_coordinates_against_monte_carlo():
    # 400 draws: the empirical mean of ~ 2.9 coordinates (Poisson-like, sd ~ 1.7)
    # has standard error ~ 0.09; tolerance 5 of them
    n, s, d = 4, 25, 800
    counts = []
    for seed in range(400):
        ds = draw_training_set(config(d=d, n=n, s=s), seed)
        _, c = np.unique(ds.support, return_counts=True)
        counts.append((c > 1).sum())
    expected = expected_shared_coordinates(n, s, d)
    assert abs(np.mean(counts) - expected) < 5 * np.std(counts) / np.sqrt(len(counts))
    # the small-overlap rule: C(n, 2) pairs times s^2 / d expected common coordinates
    # each (docs/theory.md quotes n^2 s^2 / 2d, the same for large n)
    assert abs(expected - n * (n - 1) * s ** 2 / (2 * d)) < 0.1 * expected


def test_training_and_test_sets_are_independent_and_reproducible():
    cfg = config()
    a, b = draw_training_set(cfg, 3), draw_training_set(cfg, 3)
    assert np.array_equal(a.support, b.support) and np.array_equal(a.values, b.values)
    test = draw_test_set(cfg, 3)
    assert not np.array_equal(test.values[:cfg.n], a.values)
    # the training set does not depend on n_test
    c = draw_training_set(cfg.replace(n_test=77), 3)
    assert np.array_equal(a.values, c.values)


def test_dense_noise():
    cfg = config(d=40, n=5, noise="dense", sigma_p=0.5)
    ds = draw_training_set(cfg, 0)
    assert ds.support.shape == (5, 39)
    assert (ds.support == np.arange(1, 40)).all()
    assert (ds.values != 0).all()
    assert (ds.shared_coordinates() == 39).all()
    assert active_basis(cfg, ds).tolist() == list(range(40))


@pytest.mark.parametrize("changes", [dict(noise="none"), dict(sigma_p=0.0)])
def test_noiseless(changes):
    cfg = config(**changes)
    ds = draw_training_set(cfg, 0)
    assert (ds.values == 0).all() and (ds.xi_l1 == 0).all()
    assert (ds.shared_coordinates() == 0).all()
    X = patches_in_basis(ds, active_basis(cfg, ds), active_basis(cfg, ds).size)
    assert (X[:, 1] == 0).all()
    assert np.array_equal(X[:, 0, 0], ds.y_clean * cfg.mu_norm)


def test_label_flip():
    cfg = config(n=4000, label_flip=0.3)
    ds = draw_training_set(cfg, 0)
    flipped = ds.y != ds.y_clean
    assert (ds.y[flipped] == -ds.y_clean[flipped]).all()
    # binomial(4000, 0.3): sd ~ 0.0072; tolerance 5 sd
    assert abs(flipped.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 4000)
    # the clean labels and the noise are those of the run without label noise
    clean = draw_training_set(cfg.replace(label_flip=0.0), 0)
    assert np.array_equal(clean.y_clean, ds.y_clean) and np.array_equal(clean.y, clean.y_clean)
    assert np.array_equal(clean.values, ds.values)
    # the signal patch carries y_clean, the loss sees y
    X = patches_in_basis(ds, active_basis(cfg, ds), active_basis(cfg, ds).size)
    assert np.array_equal(X[:, 0, 0], ds.y_clean * cfg.mu_norm)


def test_random_signal_position():
    cfg = config(n=2000, signal_position="random")
    ds = draw_training_set(cfg, 0)
    pos = ds.signal_position
    assert set(np.unique(pos)) == {0, 1}
    assert abs(pos.mean() - 0.5) < 5 * 0.5 / np.sqrt(2000)
    basis = active_basis(cfg, ds)
    X = patches_in_basis(ds, basis, basis.size)                # (n, 2, D)
    rows = np.arange(ds.n)
    assert np.array_equal(X[rows, pos, 0], ds.y_clean * cfg.mu_norm)
    assert (X[rows, pos, 1:] == 0).all(), "the signal patch holds only the signal"
    noise_patch = X[rows, 1 - pos]
    assert (noise_patch[:, 0] == 0).all()
    cols = np.searchsorted(basis, ds.support)
    assert np.array_equal(noise_patch[rows[:, None], cols], ds.values)
    # same labels and noise as signal_position='first'
    first = draw_training_set(cfg.replace(signal_position="first"), 0)
    assert np.array_equal(first.values, ds.values) and np.array_equal(first.y, ds.y)
    assert (first.signal_position == 0).all()


def test_patches_in_basis_places_every_entry():
    cfg = config(d=100, n=4, s=5)
    ds = draw_training_set(cfg, 2)
    basis = active_basis(cfg, ds)
    assert basis[0] == 0 and np.array_equal(basis, np.unique(np.r_[0, ds.support.ravel()]))
    X = patches_in_basis(ds, basis, basis.size + 3)             # padded columns stay 0
    dense = np.zeros((ds.n, 2, cfg.d))
    for i in range(ds.n):                                       # the obvious loop
        dense[i, 0, 0] = ds.y_clean[i] * cfg.mu_norm
        for c, v in zip(ds.support[i], ds.values[i]):
            dense[i, 1, c] = v
    assert np.array_equal(X[..., :basis.size], dense[..., basis])
    assert (X[..., basis.size:] == 0).all()


def test_generate_dataset_leaves_rng_argument_usable():
    rng = np.random.default_rng(0)
    a = generate_dataset(config(), rng, 3)
    b = generate_dataset(config(), rng, 3)
    assert not np.array_equal(a.values, b.values)


def test_more_patches_put_each_noise_patch_at_its_own_position():
    """n_patches = 4 with a random signal position: the signal is uniform among the 4
    positions, the 3 noise patches fill the others in order, each with its own support
    (row j n + i of the dataset), and every patch of X holds what the dataset says."""
    from simulator.data import draw_training_set
    from simulator.problem import build_problem

    cfg = SimulationConfig(d=5000, n=400, s=3, n_test=10, n_patches=4, signal_position="random",
                           feature_noise=0.0, seed=2)
    ds = draw_training_set(cfg, cfg.seed)
    n = cfg.n
    assert ds.support.shape == (3 * n, cfg.s) and ds.n_patches == 4
    counts = np.bincount(ds.signal_position, minlength=4)
    assert counts.min() > 70, counts                         # about 100 each
    pos = ds.noise_positions                                 # (n, 3)
    assert (np.sort(np.c_[ds.signal_position, pos], axis=1) == np.arange(4)).all()
    problem = build_problem(cfg.replace(n=20))
    small = problem.train[0]
    X, basis = problem.X[0], problem.coords[0]
    for i in range(20):
        np.testing.assert_array_equal(X[i, small.signal_position[i]],
                                      np.where(basis == 0, small.y_clean[i] * cfg.mu_norm, 0.0))
        for j in range(3):
            row = j * 20 + i
            patch = X[i, small.noise_positions[i, j]]
            np.testing.assert_array_equal(basis[patch != 0], small.support[row])
            np.testing.assert_array_equal(patch[patch != 0], small.values[row])


def test_with_two_patches_the_noise_patch_is_the_other_position():
    """n_patches = 2: one noise row per sample, at position 1 - signal_position."""
    from simulator.data import draw_training_set

    two = draw_training_set(SimulationConfig(n=60, d=2000, signal_position="random"), 0)
    assert two.support.shape == (60, 20) and two.n_patches == 2
    assert 0 < two.signal_position.sum() < 60
    np.testing.assert_array_equal(two.noise_positions[:, 0], 1 - two.signal_position)
