"""The reduced engine (simulator/reduced.py) against the full engine and the theory.

Agreement tolerance: 1e-10 relative to each array's largest magnitude over the run.
Per-entry relative error is not used because quantities cross zero (a pair passing
through 0 has a tiny value but an absolute error set by the scale of the run). The
two engines differ only by float64 rounding (different summation orders), about
1e-14 here; 1e-10 leaves room for its growth over 500 steps and would still catch a
single wrong sign (a wrong step moves a quantity by ``eta ||xi||_1``, about 1e-4 of
its scale).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from simulator import SimulationConfig, train
from simulator.config import ConfigError
from simulator.history import PER_RUN, RECORDED
from simulator.problem import build_problem
from simulator.optimizers import SignGD
from simulator.reduced import (ReducedEngine, ReducedTestWarning, ReductionError, HeldOutInputs,
                               build_reduced_batch, expected_test_overlap)
from simulator.reduced_dynamics import (ScoreGaps, evaluate, flat_state, gradient,
                                        gradient_signs_log, lift, signgd_direction, state_size)

RTOL = 1e-10
QUANTITIES = ("train_loss", "margin", "lprime", "Vs", "Vn", "Qs", "Ks", "Qn", "Kn", "softmax")
# d = 10^7: no test coordinate of seed 0 overlaps a training coordinate, so the test
# metrics can be compared too
AGREE = dict(d=10**7, n=8, s=20, steps=500, n_test=100, seed=0)


def _reduced(config, **changes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReducedTestWarning)
        return train(config.replace(engine="reduced", **changes))


def _state(b, QKn=None, Vh=None):
    """The flat state of a batch (optionally with other noise quantities)."""
    m_k, n, R = b.QKn.shape[1:]
    x = flat_state(np.empty((state_size(m_k, n), R)), m_k, n)
    x.QKn[...] = b.QKn if QKn is None else QKn
    x.QKs[...], x.Vs[...] = b.QKs, b.Vs
    x.Vh[...] = b.Vh if Vh is None else Vh
    return x


def _signs_of_kernel(x, c, clean=False):
    """The signs of the gradient scalars as the fused SignGD kernel takes them
    (``eta = 1``: the step is ``||a||_1 sign(h)``, value rows twice that)."""
    out = flat_state(np.full_like(x.X, np.nan), *x.QKn.shape[1:3])
    signgd_direction(x, c, np.ones(c.shape), 1.0, clean=clean, out=out)
    return out


def _rel_error(a, b):
    """max |a - b| / max |a| per run (run axis 1), largest over runs."""
    scale = np.abs(a).reshape(a.shape[0], a.shape[1], -1).max(axis=(0, 2))
    diff = np.abs(a - b).reshape(a.shape[0], a.shape[1], -1).max(axis=(0, 2))
    return float((diff / scale).max())


def _full_test_inputs(problem):
    """The full engine's test inputs (its frozen ``W_0 xi``) as reduced HeldOutInputs."""
    lay = problem.layout
    frozen = problem.test_frozen                                       # (R, n_test, M)
    u = frozen[..., lay.Vp].mean(-1) - frozen[..., lay.Vm].mean(-1)
    y_clean = problem.test_signal / problem.config.mu_norm
    return HeldOutInputs(q=frozen[..., lay.Q], k=frozen[..., lay.K], u=u[..., None],
                      y=problem.test_y[..., None], y_clean=y_clean[..., None])


@pytest.mark.parametrize("changes", [
    dict(optimizer="signgd"),
    dict(optimizer="gd", eta=0.05),
    dict(optimizer="adam", eta=5e-4, beta1=0.9, beta2=0.999, eps=1e-8),
    dict(optimizer="signgd", label_flip=0.25, signal_position="random", seed=1),
    dict(optimizer="lion"),
    dict(optimizer="adam", eta=5e-4, label_flip=0.25, signal_position="random", seed=1),
    dict(optimizer="signgd", n_patches=3),
    dict(optimizer="lion", n_patches=4, label_flip=0.25, signal_position="random", seed=1),
], ids=["signgd", "gd", "adam", "signgd-flips-random-position", "lion", "adam-flips-random-position",
        "signgd-3-patches", "lion-4-patches-flips-random-position"])
def test_reduced_agrees_with_full_engine_step_by_step(changes):
    config = SimulationConfig(**{**AGREE, **changes})
    problem = build_problem(config)
    assert problem.shared_coordinates.sum() == 0
    assert problem.test_overlap_fraction.max() == 0.0
    full = train(config, problem=problem).history
    red = _reduced(config).history
    for name in QUANTITIES:
        err = _rel_error(full[name], red[name])
        assert err < RTOL, f"{name}: relative error {err:.2e} >= {RTOL:g}"
    for name in ("y", "y_clean", "signal_position", "xi_l1"):
        np.testing.assert_allclose(red[name], full[name], rtol=1e-13, err_msg=name)
    # test metrics: the reduced formula fed with the full engine's test inputs
    T = full["step"].size
    Qs, Ks = (full[q].transpose(1, 2, 0) for q in ("Qs", "Ks"))       # (R, m_k, T)
    Vs = full["Vs"].T[:, None, :]
    engine = ReducedEngine(config.replace(engine="reduced"), np.array(config.seeds))
    engine.batch.test = _full_test_inputs(problem)
    QKs = np.concatenate([Qs, Ks], axis=1).transpose(2, 1, 0)          # (T, 2 m_k, R)
    metrics = engine.held_out_metrics(QKs, Vs[:, 0].T)
    for name, value in metrics.items():
        assert value.shape == (T, config.n_seeds)
        err = _rel_error(full[name], value)
        assert err < RTOL, f"{name}: relative error {err:.2e} >= {RTOL:g}"


@pytest.mark.parametrize("optimizer", ["signum", "normgd"])
def test_reduced_agrees_for_signum_and_normgd(optimizer):
    config = SimulationConfig(**{**AGREE, "steps": 200, "optimizer": optimizer, "eta": 2e-4})
    full = train(config).history
    red = _reduced(config).history
    for name in QUANTITIES:
        assert _rel_error(full[name], red[name]) < RTOL, name


def test_history_has_the_full_engines_format(tiny_config):
    config = tiny_config.replace(n_seeds=3, record_every=7)
    full = train(config).history
    red = _reduced(config).history
    assert set(red.arrays) == set(full.arrays) == set(RECORDED) | set(PER_RUN)
    for name in full.arrays:
        assert red[name].shape == full[name].shape, name
        assert red[name].dtype.kind == full[name].dtype.kind, name


def test_engines_part_only_where_the_full_engine_underflows():
    """With a large step the noise query's attention collapses: the full engine's
    product ``l'_i S_ns S_nn`` (its ``delta_n``) underflows to exactly 0, so its
    ``sign`` is 0 and that sample's query noise stops (law 3 fails). The reduced
    engine uses the exact signs, so every Qn keeps moving by exactly
    ``eta ||xi_i||_1`` (law 3) and every Vn by ``2 eta ||xi_i||_1`` (law 2), also
    after the float64 ``l'`` itself underflows (margins beyond ~745). Up to the
    first underflow the two engines agree to 1e-10; they part right after it."""
    config = SimulationConfig(d=10**7, n=4, s=20, steps=300, eta=0.05, n_test=10, seed=0)
    full = train(config).history
    red = _reduced(config).history
    step_q = config.eta * full["xi_l1"][0]                             # (n,)
    moved_full = np.abs(np.diff(full["Qn"][:, 0], axis=0)) / step_q   # (T - 1, m_k, n)
    stalled = (moved_full < 0.5).any(axis=(1, 2))
    assert stalled.any(), "the config no longer reaches underflow; raise eta"
    t = int(np.argmax(stalled))                    # full engine stalls from t to t + 1
    S, lp = full["softmax"][t, 0], full["lprime"][t, 0]                # (n, 2, 2), (n,)
    assert (np.abs(lp) * S[:, 1, 0] * S[:, 1, 1] < 1e-300).any(), "stall without underflow"
    for name in QUANTITIES:
        assert _rel_error(full[name][:t + 1], red[name][:t + 1]) < RTOL, name
    assert _rel_error(full["Qn"][:t + 2], red["Qn"][:t + 2]) > 1e-3, "engines should part"
    # reduced engine: exact law-3 and law-2 step sizes at every step (rounding of
    # quantities up to ~300 times the step: 1e-12 relative)
    moved_red = np.abs(np.diff(red["Qn"][:, 0], axis=0)) / step_q
    np.testing.assert_allclose(moved_red, 1.0, rtol=1e-9)
    np.testing.assert_allclose(np.diff(red["Vn"][:, 0], axis=0) / (2 * step_q), 1.0, rtol=1e-9)
    under = red["underflow_step"][0]
    assert (under > 0).any(), "l' should underflow in float64 during the run"


def test_signgd_laws_1_and_2_hold_exactly_on_the_reduced_engine(tiny_config):
    h = _reduced(tiny_config.replace(steps=200)).history
    eta, mu = tiny_config.eta, tiny_config.mu_norm
    # float64 rounding of a sum of t steps: relative 1e-12 of the quantities' scale
    np.testing.assert_allclose(np.diff(h["Vs"], axis=0), 2 * eta * mu, rtol=1e-9)
    np.testing.assert_allclose(np.diff(h["Vn"], axis=0),
                               np.broadcast_to(2 * eta * h["xi_l1"], h["Vn"][1:].shape),
                               rtol=1e-9)


def _random_batch(seed=0, R=5, **changes):
    config = SimulationConfig(engine="reduced", reduced_init="distribution", n=6, s=7,
                              m_k=3, m_v=2, sigma_0=0.3, label_flip=0.3, **changes)
    batch = build_reduced_batch(config, np.arange(seed, seed + R))
    return config, batch


def test_gradient_matches_a_per_sample_loop():
    """The vectorized gradient scalars against the module-doc formulas written as a
    loop over runs, samples and neurons."""
    config, b = _random_batch()
    c = b.c
    att, margin = evaluate(_state(b), c)
    h = gradient(att, margin, c, config.m_v)
    grad = dict(H=h.QKn, g=h.QKs, hV=h.Vh, gV=h.Vs)
    n, R = c.shape
    for r in range(R):
        Qs, Ks = b.QKs[0, :, 0, r], b.QKs[1, :, 0, r]
        gQ, gK, gV = np.zeros(config.m_k), np.zeros(config.m_k), 0.0
        for i in range(n):
            Qh, Kh = b.QKn[0, :, i, r], b.QKn[1, :, i, r]
            z_ss, z_sn, z_ns, z_nn = Qs @ Ks, Qs @ Kh, Qh @ Ks, Qh @ Kh
            S_sn = 1 / (1 + np.exp(z_ss - z_sn))
            S_nn = 1 / (1 + np.exp(z_ns - z_nn))
            S_ss, S_ns = 1 - S_sn, 1 - S_nn
            margin = c[i, r] * ((S_ss + S_ns) * b.Vs[0, r] + (S_sn + S_nn) * b.Vh[i, r])
            alpha = c[i, r] * -1 / (1 + np.exp(margin)) / n
            Dh = b.Vh[i, r] - b.Vs[0, r]
            d_s, d_n = alpha * S_ss * S_sn * Dh, alpha * S_ns * S_nn * Dh
            hQ, hK = d_n * (Kh - Ks), d_s * Qs + d_n * Qh
            np.testing.assert_allclose(grad['H'][0, :, i, r], hQ, rtol=1e-10, err_msg="hQ")
            np.testing.assert_allclose(grad['H'][1, :, i, r], hK, rtol=1e-10, err_msg="hK")
            np.testing.assert_allclose(grad['hV'][i, r], alpha * (S_sn + S_nn) / config.m_v,
                                       rtol=1e-10, err_msg="hV")
            gQ += d_s * (Kh - Ks)
            gK -= hK
            gV += alpha * (S_ss + S_ns) / config.m_v
        np.testing.assert_allclose(grad['g'][0, :, 0, r], gQ, rtol=1e-10, err_msg="gQ")
        np.testing.assert_allclose(grad['g'][1, :, 0, r], gK, rtol=1e-10, err_msg="gK")
        np.testing.assert_allclose(grad['gV'][0, r], gV, rtol=1e-10, err_msg="gV")


def _log_signs(x, c):
    dK = x.QKn[1] - x.QKs[1]
    gap = np.stack([np.einsum("sxr,sir->ir", x.QKs[0], dK), np.einsum("sir,sir->ir", x.QKn[0], dK)])
    att, margin = evaluate(x, c)
    signs = gradient_signs_log(ScoreGaps(dK, gap, margin.T), x.QKs, x.QKn, x.Vs, x.Vh, c)
    return flat_state(np.concatenate([signs.H.reshape(-1, c.shape[1]), signs.g.reshape(-1, c.shape[1]),
                                      signs.hV, signs.gV]), *x.QKn.shape[1:3])


@pytest.mark.parametrize("kernel", ["fused", "log-weights"])
def test_sign_kernels_give_the_signs_of_the_gradient(kernel):
    config, b = _random_batch(seed=10, R=20)
    c = b.c
    x = _state(b)
    att, margin = evaluate(x, c)
    exact = gradient(att, margin, c, config.m_v)
    signs = _signs_of_kernel(x, c) if kernel == "fused" else _log_signs(x, c)
    for name, a, s in [("H", exact.QKn, signs.QKn), ("g", exact.QKs, signs.QKs),
                       ("hV", exact.Vh, signs.Vh), ("gV", exact.Vs, signs.Vs)]:
        np.testing.assert_array_equal(np.sign(s), np.sign(a), err_msg=name)


def test_log_signs_survive_where_plain_products_underflow():
    """Stage IV pushed far: score gaps of 1000 make S_ns S_nn = e^-1000 (0 in
    float64) and margins of 800 make l' = 0. The exact law 4 sign is then set by
    the query signal term, and the signal sums keep their sign."""
    config, b = _random_batch(seed=3, R=4)
    c = np.ones_like(b.c)
    QKn = b.QKn * 60.0                                # |z_nn| ~ 1000
    Vh = b.Vs + 400.0 + np.abs(b.Vh)                  # margins ~ 800
    x = _state(b, QKn, Vh)
    att, margin = evaluate(x, c)
    S_ns_S_nn = (att.S[..., 1, 0] * att.S[..., 1, 1]).T                # (n, R)
    assert (S_ns_S_nn == 0).any()
    plain = gradient(att, margin, c, config.m_v)
    assert (plain.QKn == 0).any(), "plain float64 gradient should underflow here"
    signs = _signs_of_kernel(x, c, clean=True)
    H = signs.QKn
    # law 3: sign(hQ) = -sign(Dh) sign(Kh - Ks) with c = 1 (Dh > 0 here)
    np.testing.assert_array_equal(np.sign(H[0]), -np.sign(QKn[1] - b.QKs[1]))
    # law 4 where S_ns S_nn underflowed: sign(hK) = -sign(S_ss S_sn Qs) = -sign(Qs)
    dead = np.broadcast_to(S_ns_S_nn == 0, H[1].shape)
    np.testing.assert_array_equal(np.sign(H[1])[dead],
                                  -np.sign(np.broadcast_to(b.QKs[0], H[1].shape))[dead])
    assert (signs.QKs != 0).all() and (signs.Vs < 0).all()


def test_distribution_init_has_the_law_of_the_data_init():
    """Data-free initial state against the state computed from data and weights:
    per-entry variances normalized by their predicted values (section 9). Over
    400 runs x 8 samples x 10 neurons the normalized variance of the noise
    quantities has a standard error of about 0.01, so a 0.06 tolerance is 6 sigma;
    the signal quantities have 4000 (Qs) or 400 (Vs) draws: 0.15 and 0.45."""
    base = SimulationConfig(engine="reduced", d=10**9, n_seeds=400)
    s0, mu, m_v = base.sigma_0, base.mu_norm, base.m_v
    for init in ("data", "distribution"):
        b = build_reduced_batch(base.replace(reduced_init=init), np.arange(400))
        l2 = np.sqrt(np.square(b.mag.abs_xi).sum(0))
        np.testing.assert_allclose(np.var(b.QKn / (s0 * l2)), 1.0, atol=0.06, err_msg=init)
        np.testing.assert_allclose(np.var(b.Vh / (s0 * l2 * np.sqrt(2 / m_v))), 1.0,
                                   atol=0.3, err_msg=init)
        np.testing.assert_allclose(np.var(b.QKs / (s0 * mu)), 1.0, atol=0.15, err_msg=init)
        np.testing.assert_allclose(np.var(b.Vs / (s0 * mu * np.sqrt(2 / m_v))), 1.0,
                                   atol=0.45, err_msg=init)


def test_d_1e9_runs_and_matches_d_1e6_statistics():
    """Data mode draws supports from d - 1 coordinates and weights at coordinates up
    to 10^9; nothing of size d is built. The dynamics do not depend on d, so the
    statistics of 300 independent runs agree within sampling error: each mean is
    compared with a 5-standard-error tolerance of the difference."""
    # seeds 500..799 have disjoint supports at d = 10^6 (226 and 464 do not)
    base = SimulationConfig(engine="reduced", n=4, s=10, steps=300, record_every=300,
                            n_test=50, n_seeds=300, seed=500)
    runs = {d: _reduced(base, d=d).history for d in (10**6, 10**9)}
    for name in ("train_loss", "test_loss", "Vn", "Qn"):
        a, b = (runs[d][name][-1].reshape(300, -1).mean(1) for d in (10**6, 10**9))
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 5 * se, name
    # test inputs lie on fresh supports: none of their coordinates is trained, while a
    # real test input would touch a trained one with the expected fraction below
    assert runs[10**9]["test_overlap_fraction"][0] == 0.0
    assert expected_test_overlap(base.replace(d=10**9))[0] == pytest.approx(40 / (10**9 - 1))
    # data-free runs do not depend on d at all (only the expected overlap does)
    free = {d: _reduced(base, d=d, n_seeds=3, reduced_init="distribution").history
            for d in (10**6, 10**9)}
    for name in QUANTITIES + ("test_loss",):
        np.testing.assert_array_equal(free[10**6][name], free[10**9][name], err_msg=name)


def test_expected_test_overlap_matches_the_full_engine_on_average():
    """Mean of the full engine's observed trained fraction of test coordinates over
    40 seeds against n s / (d - 1). Each seed sees n_test s = 2000 coordinates
    with p = 0.08, so the 40-seed mean has a standard error of about 0.001; the
    tolerance 0.006 is 6 standard errors."""
    config = SimulationConfig(d=2001, n=8, s=20, n_test=100, n_seeds=40)
    coords, inputs = expected_test_overlap(config)
    assert coords == pytest.approx(160 / 2000)
    observed = build_problem(config).test_overlap_fraction
    assert abs(observed.mean() - coords) < 0.006
    assert 0 < coords < inputs < 1


@pytest.mark.parametrize("changes, message", [
    (dict(noise="dense"), r"noise='dense'"),
    (dict(seed=4), r"seed 4 samples 0, 2 share 2 noise coordinate\(s\)"),
    (dict(d=100, n=8, s=20), r"n \* s = 160 > d - 1 = 99"),
])
def test_refuses_where_the_reduction_is_not_exact(changes, message):
    config = SimulationConfig(engine="reduced", steps=5, **changes)
    with pytest.raises(ReductionError, match=message):
        _reduced(config)
    assert issubclass(ReductionError, ConfigError)


def test_distribution_init_accepts_what_data_init_refuses():
    h = _reduced(SimulationConfig(engine="reduced", seed=4, steps=5,
                                  reduced_init="distribution")).history
    assert h["train_loss"].shape == (6, 1)


def test_reduced_init_requires_the_reduced_engine():
    with pytest.raises(ConfigError, match="reduced_init='distribution' applies to engine='reduced'"):
        SimulationConfig(reduced_init="distribution")


def test_warns_about_test_inputs_on_trained_coordinates():
    with pytest.warns(ReducedTestWarning, match=r"about \d+\.\d% of real test inputs"):
        train(SimulationConfig(engine="reduced", steps=2))


def test_cli_runs_the_reduced_engine_and_refuses_with_status_2(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "simulator", "run", "--engine", "reduced",
                         "--steps", "20", "--no-report", "--quiet", "--out", str(tmp_path / "r")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "r" / "history.npz").is_file()
    bad = subprocess.run([sys.executable, "-m", "simulator", "run", "--engine", "reduced",
                          "--noise", "dense", "--steps", "2", "--out", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "noise='dense'" in bad.stderr


@pytest.mark.parametrize("changes", [dict(), dict(n_seeds=2, record_every=3, label_flip=0.2, seed=7)],
                         ids=["default", "two-runs-flips-sparse-records"])
def test_fused_signgd_kernel_equals_the_lifted_signgd(monkeypatch, changes):
    """The fused SignGD kernel (reduced_dynamics.signgd_direction) against SignGD of
    simulator.optimizers lifted onto the state (reduced_dynamics.lift), through the
    same loop, on the default config (Stages I-III and the start of IV, a few
    hundred sign changes): equal to rounding where no product underflows."""
    import simulator.reduced as reduced

    config = SimulationConfig(engine="reduced", steps=1500, n_test=50, **changes)
    fast = _reduced(config).history
    monkeypatch.setattr(reduced, "FUSED_SIGNGD", False)
    plain = _reduced(config).history
    for name in QUANTITIES + ("test_loss", "test_error"):
        assert _rel_error(plain[name], fast[name]) < RTOL, name
    np.testing.assert_array_equal(plain["underflow_step"], fast["underflow_step"])


@pytest.mark.parametrize("R", [20, 80], ids=["vecdot-runs", "einsum-runs"])
@pytest.mark.parametrize("label_flip", [0.0, 0.3], ids=["clean", "flips"])
def test_fused_signgd_step_equals_lifted_signgd_on_random_states(R, label_flip):
    """One step of the fused kernel against lift(SignGD) on random states: the steps
    are equal to rounding (1e-14 of the step), margins and softmax to 1e-14."""
    config = SimulationConfig(engine="reduced", reduced_init="distribution", n=6, s=7,
                              m_k=3, m_v=2, sigma_0=0.3, label_flip=label_flip)
    b = build_reduced_batch(config, np.arange(20, 20 + R))
    c = b.c
    x = _state(b)
    before = x.X.copy()
    att, margin = evaluate(x, c)
    h = gradient(att, margin, c, config.m_v)
    expected = flat_state(np.empty_like(x.X), config.m_k, config.n)
    lift(SignGD(), h, b.mag, config.m_v, None, 0, config.eta, out=expected)
    d = flat_state(np.full_like(x.X, np.nan), config.m_k, config.n)
    km, S = signgd_direction(x, c, config.eta * b.mag.l1, config.eta * config.mu_norm,
                             clean=bool((c == 1).all()), out=d)
    np.testing.assert_array_equal(x.X, before, err_msg="state modified")
    np.testing.assert_allclose(d.X, expected.X, rtol=1e-14, atol=0)
    np.testing.assert_allclose(km.T, margin, rtol=0, atol=1e-14 * max(1, np.abs(margin).max()))
    np.testing.assert_allclose(S[0].transpose(2, 1, 0), att.S[..., 1], rtol=0, atol=1e-14)
    np.testing.assert_allclose(S[1].transpose(2, 1, 0), att.S[..., 0], rtol=0, atol=1e-14)


def test_a_run_does_not_depend_on_its_batch():
    """Run r of a batch equals the same seed run alone to rounding, and each is
    bit-for-bit reproducible."""
    config = SimulationConfig(engine="reduced", reduced_init="distribution", steps=600,
                              n_test=50, n_seeds=5, seed=3, label_flip=0.1)
    batch = _reduced(config).history
    again = _reduced(config).history
    alone = _reduced(config.replace(seed=5, n_seeds=1)).history
    for name in QUANTITIES + ("test_loss",):
        np.testing.assert_array_equal(batch[name], again[name], err_msg=name)
        assert _rel_error(batch[name][:, 2:3], alone[name]) < RTOL, name


@pytest.mark.parametrize("optimizer, eta", [("signgd", 5e-5), ("gd", 0.05), ("adam", 5e-4),
                                            ("lion", 5e-5)])
@pytest.mark.parametrize("variant", [
    dict(score_scale=0.3), dict(pooling="mean"), dict(feature_noise=0.2), dict(batch_size=3),
    dict(score_scale=0.3, pooling="mean", feature_noise=0.2, batch_size=5),
    dict(n_patches=3), dict(n_patches=4, signal_position="random"),
    dict(n_patches=4, score_scale=0.3, pooling="mean", feature_noise=0.2, batch_size=5),
], ids=["scale", "mean", "feature-noise", "mini-batch", "all", "3-patches", "4-patches-random",
        "4-patches-all"])
def test_engines_agree_on_every_variant(optimizer, eta, variant):
    """The variants go through the one model in both engines: the reduced state's
    projections carry the feature-noise term, the mini-batches come from the same
    (seed, step) stream, and the two engines agree to 1e-10 over 500 steps."""
    config = SimulationConfig(**{**AGREE, "optimizer": optimizer, "eta": eta, **variant})
    full = train(config).history
    red = _reduced(config).history
    np.testing.assert_array_equal(full["batch"], red["batch"])
    for name in QUANTITIES:
        err = _rel_error(full[name], red[name])
        assert err < RTOL, f"{name}: relative error {err:.2e} >= {RTOL:g}"
