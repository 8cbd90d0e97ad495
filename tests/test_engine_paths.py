"""The engine's shortcuts against the plain computation they replace.

* ``coordinates='active'`` (train coordinate 0 and the union of training supports,
  test coordinates outside them frozen at their initial weights) against
  ``coordinates='all'`` (every coordinate, dense);
* a batch of runs against each run alone;
* ``signal_position='random'`` against ``'first'`` on the same data: the model has no
  positional encoding, so swapping the two patches of a sample changes nothing.
"""

import numpy as np
import pytest

from simulator import SimulationConfig, train

IGNORED = {"wall_time"}


def assert_histories_close(a, b, *, atol, skip=()):
    assert set(a.arrays) == set(b.arrays)
    for name in sorted(set(a.arrays) - IGNORED - set(skip)):
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def small():
    # d = 60 with n s = 12 training coordinates: test noise falls partly inside the
    # trained coordinates (~20%), partly outside (frozen path); seed 0's first run
    # also has shared coordinates, so the check is not limited to disjoint supports
    return SimulationConfig(d=60, n=3, s=4, m_k=2, m_v=2, n_test=40, steps=200,
                            eta=2e-3, sigma_0=0.05, n_seeds=2, seed=0)


@pytest.mark.parametrize("optimizer", ["signgd", "adam", "gd"])
def test_active_coordinates_match_dense_run(small, optimizer):
    cfg = small.replace(optimizer=optimizer, eta=0.05 if optimizer == "gd" else small.eta)
    active = train(cfg).history
    dense = train(cfg.replace(coordinates="all")).history
    overlap = active["test_overlap_fraction"]
    assert ((overlap > 0) & (overlap < 1)).all(), "both test paths must be exercised"
    assert (active["shared_coordinates"] > 0).any() and (active["shared_coordinates"] == 0).any()
    assert_histories_close(active, dense, atol=1e-10)
    # the test quantities moved during training (the check is not vacuous)
    assert np.ptp(active["test_loss"], axis=0).min() > 1e-6


@pytest.mark.parametrize("optimizer, eta", [("signgd", 2e-3), ("gd", 0.05), ("adam", 2e-3)])
def test_coordinates_outside_supports_never_move(small, optimizer, eta):
    res = train(small.replace(coordinates="all", optimizer=optimizer, eta=eta, steps=50))
    W0, W = res.problem.W0, res.W
    for r, ds in enumerate(res.problem.train):
        trained = np.union1d([0], ds.support)
        frozen = np.setdiff1d(np.arange(small.d), trained)
        assert np.array_equal(W[r][:, frozen], W0[r][:, frozen]), "untouched coordinates moved"
        # and every trained coordinate does move
        assert (W[r][:, trained] != W0[r][:, trained]).any(axis=0).all()


def test_padding_coordinate_never_moves():
    # two runs with different numbers of active coordinates: the shorter basis is
    # padded with the sentinel coordinate d, which must stay at its initial value
    cfg = SimulationConfig(d=30, n=3, s=5, m_k=2, m_v=2, n_test=10, steps=20, n_seeds=4,
                           sigma_0=0.05, eta=2e-3)
    res = train(cfg)
    pad = res.problem.coords == cfg.d
    assert pad.any(), "no run was padded; pick another seed"
    for r in range(cfg.n_seeds):
        assert np.array_equal(res.W[r][:, pad[r]], res.problem.W0[r][:, pad[r]])


def test_batch_run_equals_runs_alone(small):
    cfg = small.replace(n_seeds=3, seed=5)
    batch = train(cfg).history
    for r in range(cfg.n_seeds):
        alone = train(cfg.replace(seed=cfg.seed + r, n_seeds=1)).history
        part = batch.run(r)
        assert part.config == alone.config
        # the arithmetic of one run does not depend on the others: a SignGD step
        # amplifies any rounding difference into a step of eta, so 1e-12 is tight
        assert_histories_close(part, alone, atol=1e-12)


def test_same_seed_gives_identical_history(small):
    a, b = train(small).history, train(small).history
    for name in set(a.arrays) - IGNORED:
        assert np.array_equal(a[name], b[name]), name


def test_different_seeds_differ(small):
    a, b = train(small).history, train(small.replace(seed=1)).history
    assert not np.array_equal(a["Qn"], b["Qn"])


def test_random_signal_position_has_identical_dynamics(small):
    first = train(small)
    rand = train(small.replace(signal_position="random"))
    for ds_f, ds_r in zip(first.problem.train + first.problem.test,
                          rand.problem.train + rand.problem.test):
        assert np.array_equal(ds_f.y, ds_r.y) and np.array_equal(ds_f.support, ds_r.support)
        assert np.array_equal(ds_f.values, ds_r.values), "same seed must give the same noise"
    pos = rand.history["signal_position"]
    assert (pos == 0).any() and (pos == 1).any(), "no sample has its signal in patch 2"
    assert (first.history["signal_position"] == 0).all()
    # every recorded quantity (softmax in semantic order, test loss and error too)
    assert_histories_close(first.history, rand.history, atol=1e-12, skip={"signal_position"})
