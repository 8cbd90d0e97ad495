"""Initial weights (``simulator.initialization``): a pure function of
``(seed, row, coordinate)``, i.i.d. ``N(0, 1)`` (times ``sigma_0``)."""

import numpy as np
import pytest
from scipy import stats

from simulator import SimulationConfig
from simulator.initialization import coordinate_normals, initial_weights
from simulator.problem import build_problem


def test_value_of_a_coordinate_does_not_depend_on_the_others():
    rows = np.arange(6)
    a = coordinate_normals(7, rows, np.array([5, 100, 7, 10**12]))
    b = coordinate_normals(7, rows, np.array([7, 5]))
    c = coordinate_normals(7, rows[::-1], np.array([10**12, 3, 100]))
    d = coordinate_normals(7, np.array([2]), np.array([100]))
    assert np.array_equal(a[:, 0], b[:, 1]) and np.array_equal(a[:, 2], b[:, 0])
    assert np.array_equal(a[::-1, 3], c[:, 0]) and np.array_equal(a[::-1, 1], c[:, 2])
    assert a[2, 1] == d[0, 0]


def test_inputs_not_mutated_and_dtype():
    rows, coords = np.arange(3), np.array([4, 1, 9])
    out = coordinate_normals(0, rows, coords)
    assert out.dtype == np.float64 and out.shape == (3, 3)
    assert rows.tolist() == [0, 1, 2] and coords.tolist() == [4, 1, 9]


def test_seeds_rows_and_coordinates_give_different_values():
    base = coordinate_normals(0, np.arange(4), np.arange(50))
    assert not np.array_equal(base, coordinate_normals(1, np.arange(4), np.arange(50)))
    assert np.unique(base).size == base.size


def test_initial_weights_scale():
    coords = np.array([0, 3, 8])
    W = initial_weights(2, 5, coords, 0.01)
    np.testing.assert_array_equal(W, 0.01 * coordinate_normals(2, np.arange(5), coords))


@pytest.mark.parametrize("seed", [0, 123456789, 2**63 - 1])
def test_standard_normal_statistics(seed):
    # N = 20 x 10,000 = 2e5 draws. Tolerances are ~5 standard errors, so a correct
    # generator fails with probability below 1e-5 per check (and the draws are fixed
    # by the seed, so the test is deterministic):
    #   mean: se 1/sqrt(N) = 0.0022;  variance: se sqrt(2/N) = 0.0032;
    #   4th moment (3 for a normal): se sqrt(96/N) = 0.022;
    #   Kolmogorov-Smirnov distance: 1.95/sqrt(N) = 0.0044 is its 0.1% critical value;
    #   correlation between neighbours (coordinate k, k+1; row r, r+1; seed, seed+1):
    #   se 1/sqrt(N).
    N_rows, N_coords = 20, 10_000
    Z = coordinate_normals(seed, np.arange(N_rows), np.arange(N_coords))
    z = Z.ravel()
    N = z.size
    assert abs(z.mean()) < 5 / np.sqrt(N)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / N)
    assert abs(np.mean(z ** 4) - 3) < 5 * np.sqrt(96 / N)
    assert stats.kstest(z, "norm").statistic < 1.95 / np.sqrt(N)
    tol = 5 / np.sqrt(N)
    assert abs(np.corrcoef(Z[:, :-1].ravel(), Z[:, 1:].ravel())[0, 1]) < tol
    assert abs(np.corrcoef(Z[:-1].ravel(), Z[1:].ravel())[0, 1]) < tol
    other = coordinate_normals((seed + 1) % 2**63, np.arange(N_rows), np.arange(N_coords))
    assert abs(np.corrcoef(z, other.ravel())[0, 1]) < tol


def test_tails_are_gaussian():
    # P(|z| > 4) = 6.3e-5: about 13 of 2e5 draws (Poisson sd 3.6); a generator with
    # no tails, or too heavy ones, misses the window [2, 30]
    z = coordinate_normals(5, np.arange(20), np.arange(10_000)).ravel()
    assert 2 <= (np.abs(z) > 4).sum() <= 30


def test_problem_weights_are_the_coordinate_draws():
    cfg = SimulationConfig(d=300, n=3, s=5, m_k=2, m_v=3, n_test=10, sigma_0=0.02,
                           n_seeds=2, seed=11)
    p = build_problem(cfg)
    for r, seed in enumerate(cfg.seeds):
        n_active = (p.coords[r] < cfg.d).sum()
        expect = 0.02 * coordinate_normals(seed, np.arange(cfg.n_weight_rows),
                                           p.coords[r, :n_active])
        np.testing.assert_array_equal(p.W0[r][:, :n_active], expect)
    # the frozen test projections use the same draws: W_0 xi for test noise outside
    # the trained coordinates
    ds, basis = p.test[0], p.coords[0][p.coords[0] < cfg.d]
    frozen = np.zeros((ds.n, cfg.n_weight_rows))
    for i in range(ds.n):
        for c, v in zip(ds.support[i], ds.values[i]):
            if c not in basis:
                frozen[i] += v * 0.02 * coordinate_normals(cfg.seed, np.arange(cfg.n_weight_rows),
                                                           np.array([c]))[:, 0]
    np.testing.assert_allclose(p.test_frozen[0], frozen, rtol=1e-12, atol=1e-17)
