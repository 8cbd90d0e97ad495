"""Optimizers and the training loop (``simulator.optimizers``, ``simulator.training``)."""

import numpy as np
import pytest

from simulator import NonFiniteError, SimulationConfig, train
from simulator.model import loss_and_gradient
from types import SimpleNamespace

from simulator.config import ConfigError
from simulator.optimizers import Adam, Lion, SignGD, hyper_parameters, make_optimizer
from simulator.problem import build_problem
from simulator.history import record_steps

SKIP = {"wall_time"}


def test_sign_of_zero_is_zero():
    G = np.array([[[0.0, -2.0, 3e-300, -0.0]]])
    P, _ = SignGD().direction(G, None, 0)
    assert np.array_equal(P, [[[0.0, -1.0, 1.0, 0.0]]])


def test_lion_by_hand():
    """Lion (Chen et al. 2023): P = sign(b1 m + (1 - b1) g), then m <- b2 m + (1 - b2) g,
    with its own defaults b1 = 0.9, b2 = 0.99 (not Adam's 0.999)."""
    lion = Lion()
    assert (lion.beta1, lion.beta2) == (0.9, 0.99)
    g1, g2 = np.array([1.0, -2.0, 0.0]), np.array([-0.05, -1.0, 0.3])
    P1, m = lion.direction(g1, lion.init(g1), 0)
    assert np.array_equal(P1, [1.0, -1.0, 0.0])
    np.testing.assert_allclose(m, 0.01 * g1, rtol=1e-15)
    P2, m = lion.direction(g2, m, 1)
    # b1 m + (1 - b1) g2 = 0.009 g1 + 0.1 g2 = [0.004, -0.118, 0.03]
    assert np.array_equal(P2, [1.0, -1.0, 1.0])
    np.testing.assert_allclose(m, 0.99 * 0.01 * g1 + 0.01 * g2, rtol=1e-15)


def test_lion_runs_from_the_config_with_its_own_defaults(tiny_config):
    h = train(tiny_config.replace(optimizer="lion", steps=50)).history
    assert np.isfinite(h["train_loss"]).all() and h["train_loss"][-1, 0] < h["train_loss"][0, 0]
    assert hyper_parameters(tiny_config.replace(optimizer="lion")) == {"beta1": 0.9, "beta2": 0.99}
    assert hyper_parameters(tiny_config.replace(optimizer="adam")) == {
        "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def test_an_unknown_optimizer_is_refused_not_run_as_another():
    with pytest.raises(ConfigError, match=r"^optimizer must be one of signgd, gd, adam, signum, "
                                          r"normgd, lion; got 'sgd'$"):
        make_optimizer(SimpleNamespace(optimizer="sgd"))


def test_adam_of_zero_gradient_is_zero():
    G = np.zeros((1, 2, 3))
    adam = Adam(beta1=0.0, beta2=0.0, eps=0.0)
    P, _ = adam.direction(G, adam.init(G), 0)
    assert np.array_equal(P, np.zeros_like(G))


@pytest.mark.parametrize("eps", [0.0, 1e-300])
def test_adam_without_momentum_and_eps_is_signgd(tiny_config, eps):
    # beta1 = beta2 = 0: P = G / (|G| + eps) = sign(G) exactly once eps < |G| 1e-16
    cfg = tiny_config.replace(steps=150)
    signgd = train(cfg).history
    adam = train(cfg.replace(optimizer="adam", beta1=0.0, beta2=0.0, eps=eps)).history
    assert_same_to_rounding(signgd, adam)


def assert_same_to_rounding(a, b):
    """Equal up to float rounding (both optimizers run through the same loop and the
    same model, so here they agree bit for bit; rounding is allowed in case an
    optimizer's formula rounds differently). Counts (errors, underflow steps) must
    agree exactly."""
    for name in set(a.arrays) - SKIP:
        x, y = a[name], b[name]
        if x.dtype.kind != "f" or name.endswith("error"):
            assert np.array_equal(x, y), name
        else:
            scale = max(1.0, float(np.abs(x).max()))
            np.testing.assert_allclose(y, x, rtol=0, atol=1e-12 * scale, err_msg=name)


def test_signum_without_momentum_is_signgd(tiny_config):
    a = train(tiny_config).history
    b = train(tiny_config.replace(optimizer="signum", beta1=0.0)).history
    assert_same_to_rounding(a, b)


def test_gd_one_step_by_hand(tiny_config):
    cfg = tiny_config.replace(optimizer="gd", eta=0.3, steps=1)
    problem = build_problem(cfg)
    G = loss_and_gradient(problem.W0, problem.X, problem.y, problem.layout).grad
    W1 = train(cfg, problem=problem).W
    np.testing.assert_allclose(W1, problem.W0 - 0.3 * G, rtol=0, atol=1e-15)


def test_signgd_one_step_by_hand(tiny_config):
    cfg = tiny_config.replace(steps=1)
    problem = build_problem(cfg)
    G = loss_and_gradient(problem.W0, problem.X, problem.y, problem.layout).grad
    W1 = train(cfg, problem=problem).W
    assert np.array_equal(W1, problem.W0 - cfg.eta * np.sign(G))


def test_adam_two_steps_by_hand(tiny_config):
    b1, b2, eps, eta = 0.9, 0.99, 1e-3, 1e-2
    cfg = tiny_config.replace(optimizer="adam", beta1=b1, beta2=b2, eps=eps, eta=eta)
    problem = build_problem(cfg)

    def grad(W):
        return loss_and_gradient(W, problem.X, problem.y, problem.layout).grad

    W0 = problem.W0
    G0 = grad(W0)
    m1, v1 = (1 - b1) * G0, (1 - b2) * G0 ** 2
    W1 = W0 - eta * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    G1 = grad(W1)
    m2, v2 = b1 * m1 + (1 - b1) * G1, b2 * v1 + (1 - b2) * G1 ** 2
    W2 = W1 - eta * (m2 / (1 - b1 ** 2)) / (np.sqrt(v2 / (1 - b2 ** 2)) + eps)
    np.testing.assert_allclose(train(cfg.replace(steps=1), problem=problem).W, W1,
                               rtol=1e-13, atol=1e-16, err_msg="step 1")
    np.testing.assert_allclose(train(cfg.replace(steps=2), problem=problem).W, W2,
                               rtol=1e-13, atol=1e-16, err_msg="step 2")
    # eps matters here: the check would fail for a SignGD step
    assert not np.allclose(W1, W0 - eta * np.sign(G0), rtol=1e-6)


def test_non_finite_output_raises_naming_the_step():
    # a GD step of 1e200 sends the weights to ~1e198: test scores overflow to inf
    cfg = SimulationConfig(d=200, n=3, s=4, m_k=2, m_v=2, n_test=20, steps=10,
                           optimizer="gd", eta=1e200)
    with pytest.raises(NonFiniteError, match=r"non-finite .*output at step 1\b"):
        train(cfg)


def test_non_finite_training_output_names_step_and_sample():
    cfg = SimulationConfig(d=200, n=3, s=4, m_k=2, m_v=2, n_test=20, steps=5,
                           sigma_0=1e200, eta=1.0)
    with pytest.raises(NonFiniteError, match=r"^non-finite output at step 0 \(run seed 0, sample 0\)"):
        train(cfg)


def test_underflow_is_reported_and_the_sample_stops_moving():
    # ||xi||_1 ~ 400 and eta = 0.05: value noise grows by 2 eta ||xi||_1 ~ 40 per step,
    # so y f passes 745 (where l' = -1/(1+e^{yf}) is exactly 0) within ~20 steps
    cfg = SimulationConfig(d=2000, n=3, s=10, m_k=2, m_v=2, n_test=20, steps=40,
                           sigma_p=50.0, eta=0.05, sigma_0=0.01, seed=0)
    h = train(cfg).history
    assert (h["shared_coordinates"] == 0).all()
    under = h["underflow_step"][0]                            # (n,)
    assert (under >= 0).all()
    lp = h["lprime"][:, 0]                                    # (T, n)
    for i, t in enumerate(under):
        assert lp[t, i] == 0.0 and (lp[:t, i] != 0).all(), f"sample {i}"
        assert h["margin"][t, 0, i] > 700
        # sample i's own quantities stop: sign(0) = 0 on its (unshared) support
        for name in ("Vn", "Qn", "Kn"):
            a = h[name][:, 0, ..., i]
            assert np.array_equal(a[t:], np.broadcast_to(a[t], a[t:].shape)), (name, i)
    # after every sample underflowed, nothing moves at all
    last = under.max()
    for name in ("Vs", "Qs", "Ks"):
        a = h[name][last:, 0]
        assert np.array_equal(a, np.broadcast_to(a[0], a.shape)), name


def test_no_underflow_reported_when_none_happens(tiny_config):
    h = train(tiny_config).history
    assert (h["lprime"] != 0).all() and (h["underflow_step"] == -1).all()


def test_train_does_not_mutate_its_problem(tiny_config):
    problem = build_problem(tiny_config)
    before = {name: getattr(problem, name).copy()
              for name in ("X", "y", "W0", "coords", "test_frozen", "test_y", "test_signal")}
    train(tiny_config, problem=problem)
    for name, a in before.items():
        assert np.array_equal(getattr(problem, name), a), f"{name} was mutated"


@pytest.mark.parametrize("steps, every, expected", [
    (10, 1, list(range(11))),
    (10, 3, [0, 3, 6, 9, 10]),
    (10, 5, [0, 5, 10]),
    (0, 4, [0]),
])
def test_recorded_steps(tiny_config, steps, every, expected):
    assert record_steps(steps, every).tolist() == expected
    h = train(tiny_config.replace(steps=steps, record_every=every)).history
    assert h.steps.tolist() == expected
    assert h["Qn"].shape == (len(expected), 1, tiny_config.m_k, tiny_config.n)


def test_recording_does_not_change_the_dynamics(tiny_config):
    every = train(tiny_config).history
    sparse = train(tiny_config.replace(record_every=7)).history
    rows = np.searchsorted(every.steps, sparse.steps)
    for name in ("train_loss", "test_loss", "Vn", "Qn", "Kn", "softmax"):
        assert np.array_equal(every[name][rows], sparse[name]), name


def test_signgd_training_loss_falls(tiny_config):
    # value noise grows by 2 eta ||xi_i||_1 per step (law 2), so the margins grow
    # linearly and the loss falls geometrically once they exceed ~1
    h = train(tiny_config.replace(steps=600)).history
    assert h["train_loss"][-1, 0] < 0.05 * h["train_loss"][0, 0]
    assert h["train_error"][-1, 0] == 0.0


def test_theory_quantities_match_their_definitions(tiny_config):
    # section 4 definitions from the final weights, against the recorded last row
    res = train(tiny_config.replace(steps=20))
    p, h = res.problem, res.history
    lay, mu = p.layout, tiny_config.mu_norm
    W = res.W[0]                                              # (M, D)
    ds = p.train[0]
    xi = np.zeros((ds.n, p.D))
    cols = np.searchsorted(p.coords[0], ds.support)
    xi[np.arange(ds.n)[:, None], cols] = ds.values            # (n, D) noise in the basis
    mu_vec = np.zeros(p.D)
    mu_vec[0] = mu
    vbar = W[lay.Vp].mean(0) - W[lay.Vm].mean(0)
    yxi = ds.y[:, None] * xi
    np.testing.assert_allclose(h["Vs"][-1, 0], vbar @ mu_vec, rtol=1e-12)
    np.testing.assert_allclose(h["Vn"][-1, 0], yxi @ vbar, rtol=1e-12)
    np.testing.assert_allclose(h["Qs"][-1, 0], W[lay.Q] @ mu_vec, rtol=1e-12)
    np.testing.assert_allclose(h["Ks"][-1, 0], W[lay.K] @ mu_vec, rtol=1e-12)
    np.testing.assert_allclose(h["Qn"][-1, 0], W[lay.Q] @ yxi.T, rtol=1e-12)
    np.testing.assert_allclose(h["Kn"][-1, 0], W[lay.K] @ yxi.T, rtol=1e-12)
    S = h["softmax"][-1, 0]                                   # (n, 2, 2)
    np.testing.assert_allclose(S.sum(-1), 1.0, atol=1e-15)
    # l' and the loss from the recorded margins
    m = h["margin"][-1, 0]
    np.testing.assert_allclose(h["lprime"][-1, 0], -1 / (1 + np.exp(m)), rtol=1e-12)
    np.testing.assert_allclose(h["train_loss"][-1, 0], np.mean(np.log1p(np.exp(-m))), rtol=1e-12)


@pytest.mark.parametrize("changes", [
    dict(noise="dense"), dict(noise="none"), dict(sigma_p=0.0), dict(label_flip=0.3),
    dict(signal_position="random"), dict(optimizer="normgd", eta=1e-2),
    dict(coordinates="all"), dict(n_seeds=3),
])
def test_variants_train_to_finite_histories(tiny_config, changes):
    h = train(tiny_config.replace(d=40, **changes)).history
    for name in h.arrays:
        assert np.isfinite(h[name]).all(), name
    if changes.get("noise") == "none" or changes.get("sigma_p") == 0.0:
        # no noise: every noise quantity is exactly 0 and stays 0
        for name in ("Vn", "Qn", "Kn"):
            assert (h[name] == 0).all(), name
