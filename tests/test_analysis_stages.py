"""Stage detectors, closed-form predictions and fits on hand-built histories with known
answers (``analysis.stages``, ``analysis.predictions``, ``analysis.fits``)."""

import math

import numpy as np
import pytest
from scipy.special import expit

from analysis.fits import classify_growth, s21_decay
from analysis.predictions import crossing_time, predict
from analysis.quantities import quantities
from analysis.regime import conditions, in_regime
from analysis.stages import detect_stages, first_at, first_from
from analysis.synthetic import law_history, make_history
from simulator import SimulationConfig

T = 30


def cfg(n=3, m_k=2, **kw):
    return SimulationConfig(n=n, m_k=m_k, steps=T - 1, **kw)


def test_first_from_and_first_at():
    ok = np.array([[0, 1, 0], [1, 1, 0], [0, 1, 0], [1, 1, 1], [1, 1, 1]], bool)   # (T=5, R=3)
    step = np.array([0, 1, 2, 3, 4])
    assert np.array_equal(first_from(ok, step), [3, 0, 3])
    assert np.array_equal(first_at(ok, step), [1, 0, 3])
    assert np.isnan(first_from(np.zeros((3, 1), bool), step[:3]))[0]


# ---------------------------------------------------------------- T1
def value_noise(cross, dip=None):
    """Vn_i(t) = t - c_i + 0.5 (> 0 from t = c_i), optionally negative again at ``dip``."""
    Vn = np.arange(T)[:, None, None] - np.asarray(cross)[None, None, :] + 0.5   # (T, 1, n)
    if dip is not None:
        Vn[dip[0], 0, dip[1]] = -1.0
    return Vn


@pytest.mark.parametrize("cross, dip, expected", [
    ([3, 5, 1], None, 5.0),
    ([3, 5, 1], (8, 2), 9.0),          # sample 2 falls back at step 8: Stage I from 9
    ([3, 5, 40], None, math.nan),      # sample 2 never crosses
])
def test_T1_is_when_every_value_noise_exceeds_value_signal(cross, dip, expected):
    h = make_history(cfg(), T, Vn=value_noise(cross, dip))
    T1 = detect_stages(quantities(h)).T1[0]
    assert (math.isnan(T1) and math.isnan(expected)) or T1 == expected


# ---------------------------------------------------------------- T2
def pairs_history(risky_oscillates=True):
    """Value gap positive from the start (T1 = 0); eta ||xi||_1 = h = 0.1.

    pair (0, 0): Qn = 1, Kn = -0.45 + 0.05 t  -> shares a sign from t = 10
    pair (0, 1): Qn = Kn = 1                 -> aligned at 0
    pair (1, 0): Qn = -1, Kn = 0.3 + 0.1 t   -> shares a sign only... never (stays opposite)
    pair (1, 1): sum 0.05 < h; oscillates (signs swap every step) or aligns at 4
    """
    n, m_k = 2, 2
    c = cfg(n=n, m_k=m_k, eta=0.1)
    t = np.arange(T, dtype=float)
    Qn = np.zeros((T, 1, m_k, n))
    Kn = np.zeros((T, 1, m_k, n))
    Qn[:, 0, 0, 0], Kn[:, 0, 0, 0] = 1.0, -0.45 + 0.05 * t
    Qn[:, 0, 0, 1], Kn[:, 0, 0, 1] = 1.0, 1.0
    Qn[:, 0, 1, 0], Kn[:, 0, 1, 0] = 1.0, 1.0
    alt = np.where(t % 2 == 0, 1.0, -1.0)
    if risky_oscillates:
        Qn[:, 0, 1, 1], Kn[:, 0, 1, 1] = 0.075 * alt, -0.025 * alt
    else:
        Qn[:, 0, 1, 1] = 0.075
        Kn[:, 0, 1, 1] = np.where(t >= 4, 0.01, -0.025)
    return make_history(c, T, Vn=np.ones((T, 1, n)), Qn=Qn, Kn=Kn)


def test_T2_leaves_out_oscillating_at_risk_pairs_but_reports_them():
    st = detect_stages(quantities(pairs_history()))
    assert st.T2[0] == 10.0
    assert math.isnan(st.T2_all[0])                  # the risky pair never aligns
    assert st.at_risk[0].sum() == 1 and st.at_risk[0, 1, 1]
    assert st.oscillating[0].sum() == 1 and st.oscillating[0, 1, 1]
    assert st.aligned_sign[0, 0, 0] == 1 and st.aligned_sign[0, 1, 1] == 0


def test_T2_includes_at_risk_pairs_that_align():
    st = detect_stages(quantities(pairs_history(risky_oscillates=False)))
    assert st.T2[0] == 10.0 and st.T2_all[0] == 10.0
    assert not st.oscillating[0].any()
    assert st.pair_align_step[0, 1, 1] == 4.0


def test_T2_is_nan_when_a_safe_pair_never_aligns():
    h = pairs_history()
    Kn = h["Kn"].copy()
    Kn[:, 0, 0, 0] = -0.45                           # pair (0, 0) stays opposite, not at risk
    h.arrays["Kn"] = Kn
    assert math.isnan(detect_stages(quantities(h)).T2[0])


# ---------------------------------------------------------------- T3
def voting_history(ks_sign=-1.0, cross=10):
    """Vn > Vs, l' = -1/2, softmax 1/2, every Kn = Qn = 1: the votes are
    vote_Q = sign(sum_i (Kn - Ks)) = +1 and vote_K = -sign(sum_i (Qs + Qn)/4) = -1.
    Qs turns positive at ``cross``; Ks is constant with sign ``ks_sign``."""
    n, m_k = 3, 2
    t = np.arange(T, dtype=float)
    Qs = np.repeat(((t - cross + 0.5) * 0.01)[:, None, None], m_k, axis=2)
    return make_history(cfg(n=n, m_k=m_k), T, Vn=np.ones((T, 1, n)), Qs=Qs,
                        Ks=np.full((T, 1, m_k), 0.01 * ks_sign),
                        Qn=np.ones((T, 1, m_k, n)), Kn=np.ones((T, 1, m_k, n)))


def test_T3_is_when_signal_signs_agree_with_the_votes():
    assert detect_stages(quantities(voting_history())).T3[0] == 10.0


def test_T3_is_nan_when_key_signal_goes_against_its_vote():
    assert math.isnan(detect_stages(quantities(voting_history(ks_sign=+1.0))).T3[0])


# ---------------------------------------------------------------- T4
def decay_history(bump=None):
    t = np.arange(T, dtype=float)
    s21 = 0.5 * np.exp(-0.1 * t ** 2)        # below 1% of 0.5 once 0.1 t^2 > ln 100 = 4.6: t >= 7
    if bump is not None:
        s21[bump] = 0.4
    S = np.full((T, 1, 2, 2, 2), 0.5)
    S[:, 0, :, 1, 0] = s21[:, None]
    S[:, 0, :, 1, 1] = 1 - s21[:, None]
    return make_history(cfg(n=2), T, softmax=S)


@pytest.mark.parametrize("bump, expected", [(None, 7.0), (12, 13.0)])
def test_T4_is_when_every_s21_falls_below_one_percent(bump, expected):
    assert detect_stages(quantities(decay_history(bump))).T4[0] == expected


def test_T4_is_nan_without_decay():
    assert math.isnan(detect_stages(quantities(make_history(cfg(), T))).T4[0])


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.5])
def test_bad_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match="s21_threshold must be in"):
        detect_stages(quantities(make_history(cfg(), T)), s21_threshold=threshold)


# ---------------------------------------------------------------- predictions
def test_crossing_time_matches_brute_force():
    rng = np.random.default_rng(1)
    D0 = np.r_[rng.normal(0, 1, 50), -3.0, 0.0, 2.0]
    rate = np.r_[rng.uniform(0.05, 1, 50), 1.0, 0.5, -1.0]
    got = crossing_time(D0, rate)
    for d, r, g in zip(D0, rate, got):
        brute = next((t for t in range(1000) if d + r * t > 0), math.nan)
        assert (math.isnan(g) and math.isnan(brute)) or g == brute, (d, r)
    assert crossing_time(-1.0, 0.0) != crossing_time(-1.0, 0.0)   # never: nan


@pytest.fixture(scope="module")
def laws_run():
    """Law-exact SignGD history with tiny signals (``||mu|| = 1e-4``), so Stage II is the
    pure pair dynamics, plus two planted at-risk pairs: one stuck, one that aligns."""
    n, m_k = 5, 4
    c = SimulationConfig(n=n, m_k=m_k, eta=1e-3, mu_norm=1e-4, steps=120, seed=0)
    rng = np.random.default_rng(2)
    xi_l1 = rng.uniform(5, 10, (1, n))
    h = 1e-3 * xi_l1[0]
    Qn = rng.normal(0, 0.05, (1, m_k, n))
    Kn = rng.normal(0, 0.05, (1, m_k, n))
    Vn = rng.normal(0, 0.01, (1, n))
    Vn[0, :2] = 0.02                                  # samples 0, 1: Stage II from step 0
    # stuck: c = 0.2 h, smaller member 2.2 h: k = 3 steps, 0.2 + 2.2 - 3 < 0
    Qn[0, 0, 0], Kn[0, 0, 0] = 2.4 * h[0], -2.2 * h[0]
    # aligns: c = 0.2 h, smaller member 2.9 h: 0.2 + 2.9 - 3 > 0, aligned at step 3
    Qn[0, 1, 1], Kn[0, 1, 1] = 3.1 * h[1], -2.9 * h[1]
    state0 = {"Vs": np.zeros(1), "Vn": Vn, "Qs": np.zeros((1, m_k)), "Ks": np.zeros((1, m_k)),
              "Qn": Qn, "Kn": Kn}
    return law_history(c, state0, xi_l1)


def test_predicted_stage_one_is_exact(laws_run):
    q = quantities(laws_run)
    p, st = predict(q), detect_stages(q)
    assert np.array_equal(p.T1_sample, st.T1_sample)
    assert p.T1[0] == st.T1[0]


def test_predicted_alignment_signs_times_and_stuck_pairs(laws_run):
    q = quantities(laws_run)
    p, st = predict(q), detect_stages(q)
    assert p.stuck[0, 0, 0] and st.oscillating[0, 0, 0]
    assert not p.stuck[0, 1, 1] and p.align_step[0, 1, 1] == 3 and st.pair_align_step[0, 1, 1] == 3
    assert np.array_equal(p.stuck, st.oscillating)
    ok = ~p.stuck
    assert np.array_equal(p.aligned_sign[ok], st.aligned_sign[ok])
    assert np.array_equal(p.align_step[ok], st.pair_align_step[ok])
    assert np.array_equal(p.at_risk, st.at_risk) and p.at_risk.sum() >= 2
    assert p.T2[0] == st.T2[0]


def test_predicted_majority_is_a_weighted_vote_of_aligned_signs():
    """Three samples, neuron 0: aligned signs (+1, -1, -1). At step 0 the vote is the sum
    of the key noises (two against one); ten steps on, the sample with the larger
    ``||xi||_1`` has grown its value gap and its key noise six times faster and wins, as
    in the late majority, which weighs each sample by ``r_i h_i``."""
    from analysis.predictions import votes_at

    c = SimulationConfig(n=3, m_k=1, eta=1e-3, mu_norm=1e-4, steps=5)
    Qn = np.array([[[0.05, -0.05, -0.05]]])[None]   # (T=1, R=1, m_k=1, n=3)
    h = make_history(c.replace(steps=0), 1, Vn=np.full((1, 1, 3), 0.01), Qn=Qn, Kn=Qn.copy(),
                     xi_l1=np.array([[30.0, 5.0, 5.0]]))
    p = predict(quantities(h))
    assert p.T2[0] == 0 and p.Qs_sign[0, 0] == 1 and p.Ks_sign[0, 0] == -1
    assert p.minority[0, 0].tolist() == [False, True, True]
    vote_q, vote_k, decided = votes_at(quantities(h), p, np.array([0.0]))
    assert (vote_q[0, 0], vote_k[0, 0], decided[0, 0]) == (-1, 1, True)
    vote_q, vote_k, decided = votes_at(quantities(h), p, np.array([10.0]))
    assert (vote_q[0, 0], vote_k[0, 0], decided[0, 0]) == (1, -1, True)


# ---------------------------------------------------------------- fits
@pytest.mark.parametrize("g, form", [
    (lambda t: 2 + 3 * t, "linear"),
    (lambda t: 1 + 0.01 * t ** 2, "quadratic"),
    (lambda t: 1 + 0.01 * t ** 2 + 0.5 * t, "quadratic"),
    (lambda t: np.sin(t / 3), "other"),
])
def test_classify_growth(g, form):
    t = np.arange(100, dtype=float)
    assert classify_growth(t, g(t))[0] == form


def test_classify_growth_needs_points():
    assert classify_growth(np.arange(3.0), np.arange(3.0))[0] == "undetermined"


@pytest.mark.parametrize("gap, form", [(lambda t: 0.01 * t ** 2, "quadratic"),
                                       (lambda t: 0.5 * t, "linear")])
def test_s21_decay_reads_the_score_gap(gap, form):
    t = np.arange(T, dtype=float)
    S = np.full((T, 1, 2, 2, 2), 0.5)
    S[:, 0, :, 1, 0] = expit(-gap(t))[:, None]
    S[:, 0, :, 1, 1] = expit(gap(t))[:, None]
    q = quantities(make_history(cfg(n=2), T, softmax=S))
    assert s21_decay(q, np.array([0.0]))[0].form == form


# ---------------------------------------------------------------- regime
def test_regime_flags_dense_noise_and_shared_supports():
    base = SimulationConfig(n=4, m_k=2, d=20_000, s=20)
    h = make_history(base, 3, Qn=np.full((3, 1, 2, 4), 0.05), Kn=np.full((3, 1, 2, 4), 0.05),
                     xi_l1=np.full((1, 4), 16.0))
    conds = conditions(h, quantities(h))
    assert in_regime(conds), [c for c in conds if not c.ok]
    h2 = make_history(base.replace(noise="dense"), 3,
                      shared_coordinates=np.full((1, 4), 20, dtype=np.int64))
    failed = {c.name for c in conditions(h2, quantities(h2)) if not c.ok}
    assert {"sparse noise", "fraction of samples sharing coordinates"} <= failed
    assert not in_regime(conditions(h2, quantities(h2)))


# ---------------------------------------------------------------- closed form vs a plain loop
def pair_loop(Q0, K0, h, t1, steps):
    """Laws 3-4 with the signals neglected, one pair, step by step:
    ``dQ = g h sign(K)``, ``dK = g h sign(Q)``, ``g = -1`` before ``t1``, else ``+1``."""
    Q, K, out = Q0, K0, [(Q0, K0)]
    for t in range(steps):
        g = -1.0 if t < t1 else 1.0
        Q, K = Q + g * h * np.sign(K), K + g * h * np.sign(Q)
        out.append((Q, K))
    return out


def test_stage_closed_forms_match_a_plain_loop():
    """Every case of Stage I (apart, shrink, one member crosses, both cross together and
    oscillate) and Stage II (aligned, aligns at T1 + k, stuck), on random pairs."""
    from analysis.predictions import stage_one, stage_two

    rng = np.random.default_rng(5)
    h = 1.0
    Q0 = rng.normal(0, 4, 400)
    K0 = np.where(np.arange(400) % 4 == 0, Q0 + rng.uniform(-0.3, 0.3, 400), rng.normal(0, 4, 400))
    t1 = rng.integers(0, 12, 400).astype(float)
    Q1, K1, together, k0 = stage_one(Q0, K0, h, t1)
    sign, step, stuck = stage_two(Q1, K1, h, t1)
    assert together.sum() > 20 and stuck.sum() > 5            # the rare cases are covered
    for j in range(400):
        traj = pair_loop(Q0[j], K0[j], h, int(t1[j]), 60)
        assert traj[int(t1[j])] == pytest.approx((Q1[j], K1[j]), abs=1e-12), j
        shared = [t for t in range(int(t1[j]), 61) if np.sign(traj[t][0]) == np.sign(traj[t][1])]
        if stuck[j]:
            assert not shared, j
        else:
            assert shared[0] == step[j] and np.sign(traj[shared[0]][0]) == sign[j], j
            assert all(np.sign(traj[t][0]) == sign[j] == np.sign(traj[t][1])
                       for t in range(shared[0], 61)), j


def test_stage_one_double_crossing_is_predicted_to_oscillate():
    """A common-sign pair whose members cross zero in the same step of Stage I swaps
    sides every step until T1_i; the old closed form sent it far apart instead."""
    n, m_k = 2, 1
    c = SimulationConfig(n=n, m_k=m_k, eta=1e-3, mu_norm=1e-5, steps=30, seed=0)
    xi_l1 = np.full((1, n), 10.0)
    hstep = 1e-3 * 10.0
    Vn = np.array([[-0.14, 0.5]])                  # sample 0: T1_0 = 8 (rate 2 h); sample 1: 0
    state0 = {"Vs": np.zeros(1), "Vn": Vn, "Qs": np.zeros((1, m_k)), "Ks": np.zeros((1, m_k)),
              "Qn": np.array([[[1.36, 5.0]]]) * hstep, "Kn": np.array([[[1.41, 5.0]]]) * hstep}
    q = quantities(law_history(c, state0, xi_l1))
    p, st = predict(q), detect_stages(q)
    assert p.T1_sample[0, 0] == st.T1_sample[0, 0] == 8
    assert p.pair_sum[0, 0, 0] == pytest.approx(-1.23 * hstep)
    assert p.oscillates[0, 0, 0] and st.oscillating[0, 0, 0]
    assert p.align_step[0, 0, 0] == st.pair_align_step[0, 0, 0] == 8
    assert p.aligned_sign[0, 0, 0] == st.aligned_sign[0, 0, 0] == -1


# ---------------------------------------------------------------- stage intervals
def stages_with(T1, T2, T3, T4):
    from analysis.stages import Stages

    arr = lambda v: np.array([float(v)])            # noqa: E731
    z = np.zeros((1, 1, 1))
    return Stages(T1=arr(T1), T2=arr(T2), T2_all=arr(T2), T3=arr(T3), T3_settled=arr(T3),
                  T4=arr(T4), T1_sample=np.zeros((1, 1)), at_risk=z > 0, oscillating=z > 0,
                  pair_sum_at_start=z, pair_align_step=z, aligned_sign=z, s21_threshold=0.01)


@pytest.mark.parametrize("times, starts", [
    ((4, 49, 213, 1131), [0, 4, 49, 213]),           # in order: I [0,4) II [4,49) III [49,213) IV
    ((4, 40, 3114, 1074), [0, 4, 40, 3114]),         # sigma_0 = 0.05: T4 inside Stage III
    ((4, 40, math.nan, 1074), [0, 4, 40, None]),     # T3 never: Stage III lasts to the end
])
def test_stage_of_covers_every_step_with_the_earliest_unfinished_stage(times, starts):
    from analysis.stages import stage_intervals, stage_of

    st = stages_with(*times)
    steps = np.arange(4001)
    k = stage_of(st, steps)[:, 0]
    assert k.shape == steps.shape and set(np.unique(k)) <= {1, 2, 3, 4}
    assert np.all(np.diff(k) >= 0)                    # stages never go back
    for stage, start in enumerate(starts, 1):
        if start is None:
            assert stage not in k
        else:
            assert k[start] == stage and (start == 0 or k[start - 1] == stage - 1)
    iv = stage_intervals(st, 4000)
    assert [d["stage"] for d in iv] == ["I", "II", "III", "IV"]
    assert iv[0]["start"] == 0 and iv[-1]["end"] == 4001
    assert all(a["end"] == b["start"] for a, b in zip(iv, iv[1:]))
    for d, stage in zip(iv, range(1, 5)):
        assert np.all(k[d["start"]:d["end"]] == stage)


def test_stage_overlaps_names_out_of_order_times():
    from analysis.stages import stage_overlaps

    assert stage_overlaps(stages_with(4, 40, 3114, 1074)) == "T4<T3"
    assert stage_overlaps(stages_with(4, 49, 213, 1131)) == ""
