"""Law checks of ``analysis.laws`` on hand-built histories where the answer is known.

A law-exact history (``analysis.synthetic.law_history``: the closed state evolved by
laws 1-6) must give zero mismatches; one wrong change planted at a known step must give
exactly one mismatch, at that step and index; items that break the laws' assumptions
must be reported apart, never as mismatches.
"""

import numpy as np
import pytest

from analysis.laws import check_laws, consecutive_pairs, signal_votes
from analysis.quantities import quantities
from analysis.synthetic import law_history, make_history
from simulator import History, SimulationConfig, train

N, M_K, STEPS = 4, 3, 40
ETA, MU = 1e-3, 0.05


@pytest.fixture(scope="module")
def exact():
    """A law-exact history: random small state, all six laws hold by construction."""
    cfg = SimulationConfig(n=N, m_k=M_K, eta=ETA, mu_norm=MU, steps=STEPS, seed=0)
    rng = np.random.default_rng(0)
    state0 = {"Vs": rng.normal(0, 1e-3, 1), "Vn": rng.normal(0, 1e-2, (1, N)),
              "Qs": rng.normal(0, 1e-3, (1, M_K)), "Ks": rng.normal(0, 1e-3, (1, M_K)),
              "Qn": rng.normal(0, 0.05, (1, M_K, N)), "Kn": rng.normal(0, 0.05, (1, M_K, N))}
    return law_history(cfg, state0, rng.uniform(5, 10, (1, N)))


def copy_history(h, **arrays):
    out = {k: v.copy() for k, v in h.arrays.items()}
    out.update(arrays)
    return History(h.config, out)


def test_law_exact_history_has_no_mismatch_and_checks_every_item(exact):
    rep = check_laws(quantities(exact))
    P = STEPS  # consecutive pairs of STEPS + 1 records
    expected = {1: P, 2: P * N, 3: P * M_K * N, 4: P * M_K * N, 5: P * M_K, 6: P * M_K}
    assert rep.step_pairs == P and rep.gaps == 0
    for law, count in expected.items():
        assert rep[law].checked[0] == count, f"law {law} checked"
        assert rep[law].mismatches[0] == 0, f"law {law}: {rep[law].first_mismatch}"
        assert all(v[0] == 0 for v in rep[law].excluded.values()), f"law {law} excluded"


# (law, array, index after the run axis, step size of the law)
PLANTS = [
    (1, "Vs", (), lambda h: ETA * MU),
    (2, "Vn", (2,), lambda h: ETA * h["xi_l1"][0, 2]),
    (3, "Qn", (1, 2), lambda h: ETA * h["xi_l1"][0, 2]),
    (4, "Kn", (0, 3), lambda h: ETA * h["xi_l1"][0, 3]),
    (5, "Qs", (2,), lambda h: ETA * MU),
    (6, "Ks", (1,), lambda h: ETA * MU),
]


@pytest.mark.parametrize("law, name, index, step", PLANTS)
@pytest.mark.parametrize("offset", [0.5, -2.0])   # half a step; a reversed step
def test_one_wrong_change_is_one_mismatch(exact, law, name, index, step, offset):
    t = 17
    x = exact[name].copy()
    x[(slice(t + 1, None), 0) + index] += offset * step(exact)   # only the change t -> t+1 is off
    rep = check_laws(quantities(copy_history(exact, **{name: x})))
    assert rep[law].mismatches[0] == 1
    assert rep[law].first_mismatch[0] == (t,) + index
    assert rep[law].max_error[0] == pytest.approx(abs(offset), rel=1e-6)


def test_tolerance_is_relative_to_one_step(exact):
    Qn = exact["Qn"].copy()
    Qn[5:, 0, 0, 0] += 1e-6 * ETA * exact["xi_l1"][0, 0]
    h = copy_history(exact, Qn=Qn)
    assert check_laws(quantities(h), tol=1e-9)[3].mismatches[0] == 1
    assert check_laws(quantities(h), tol=1e-3)[3].mismatches[0] == 0


@pytest.mark.parametrize("tol", [-1e-9, float("nan")])
def test_bad_tolerance_is_refused(exact, tol):
    with pytest.raises(ValueError, match="tol must be >= 0"):
        check_laws(quantities(exact), tol=tol)


def _break(h, **extra):
    """History ``h`` with a wrong query-noise change of sample 1 at step 10."""
    Qn = h["Qn"].copy()
    Qn[11:, 0, :, 1] += 0.5 * ETA * h["xi_l1"][0, 1]
    return copy_history(h, Qn=Qn, **extra)


def _with(h, name, edit):
    a = h[name].copy()
    edit(a)
    return {name: a}


@pytest.mark.parametrize("reason, extra, expected", [
    ("shared", lambda h: _with(h, "shared_coordinates", lambda a: a.__setitem__((0, 1), 2)),
     STEPS * M_K),                                   # every step of sample 1
    ("underflow", lambda h: _with(h, "lprime", lambda a: a.__setitem__((10, 0, 1), 0.0)), M_K),
    ("underflow", lambda h: _with(h, "softmax", lambda a: a.__setitem__((10, 0, 1, 1, 0), 0.0)),
     M_K),                                           # s_{i,21} exactly 0
    ("dirty_label", lambda h: _with(h, "y_clean", lambda a: a.__setitem__((0, 1), -1.0)),
     STEPS * M_K),
])
def test_broken_assumptions_are_reported_apart(exact, reason, extra, expected):
    h = _break(exact, **extra(exact))
    res = check_laws(quantities(h))[3]
    assert res.mismatches[0] == 0
    assert res.excluded[reason][0] == expected
    assert res.checked[0] == STEPS * M_K * N - expected


def test_without_exclusion_the_same_break_is_a_mismatch(exact):
    assert check_laws(quantities(_break(exact)))[3].mismatches[0] == M_K


def test_only_consecutive_records_are_compared(exact):
    keep = np.r_[0:3, 4:STEPS + 1]          # drop record 3: steps 0, 1, 2, 4, 5, ...
    arrays = {k: (v[keep] if v.ndim and v.shape[0] == STEPS + 1 and k != "seeds" else v)
              for k, v in exact.arrays.items()}
    h = History(exact.config, arrays)
    assert list(consecutive_pairs(h["step"]))[:3] == [0, 1, 3]
    rep = check_laws(quantities(h))
    assert rep.step_pairs == STEPS - 2 and rep.gaps == 1
    for law in range(1, 7):
        assert rep[law].mismatches[0] == 0, f"law {law} compared across the gap"


def test_no_consecutive_records_means_nothing_checked(exact):
    keep = np.arange(0, STEPS + 1, 2)
    arrays = {k: (v[keep] if v.ndim and v.shape[0] == STEPS + 1 and k != "seeds" else v)
              for k, v in exact.arrays.items()}
    rep = check_laws(quantities(History(exact.config, arrays)))
    assert rep.step_pairs == 0
    assert all(rep[law].checked[0] == 0 for law in range(1, 7))


def test_signal_votes_match_a_plain_loop(exact):
    q = quantities(exact)
    vote_q, vote_k = signal_votes(q)
    for t in (0, 7, STEPS):
        for s in range(M_K):
            sq = sk = 0.0
            for i in range(N):
                lp = abs(q.lprime[t, 0, i])
                gap = q.Vn[t, 0, i] - q.Vs[t, 0]
                s1112 = q.s11[t, 0, i] * q.s12[t, 0, i]
                s2122 = q.s21[t, 0, i] * q.s22[t, 0, i]
                sq += lp * s1112 * gap * (q.Kn[t, 0, s, i] - q.Ks[t, 0, s])
                sk += lp * gap * (s1112 * q.Qs[t, 0, s] + s2122 * q.Qn[t, 0, s, i])
            assert vote_q[t, 0, s] == np.sign(sq), f"vote_Q t={t} s={s}"
            assert vote_k[t, 0, s] == -np.sign(sk), f"vote_K t={t} s={s}"


def test_batch_runs_are_counted_separately(exact):
    """Two runs stacked on the R axis; a break in run 1 is counted for run 1 only."""
    h2 = _break(exact)
    cfg = exact.config.replace(n_seeds=2)
    arrays = {}
    for k, v in exact.arrays.items():
        if k in ("step", "wall_time"):
            arrays[k] = v
        elif v.ndim >= 1 and v.shape[0] == STEPS + 1:
            arrays[k] = np.concatenate([v, h2[k]], axis=1)
        else:
            arrays[k] = np.concatenate([v, h2[k]], axis=0)
    rep = check_laws(quantities(History(cfg, arrays)))
    assert list(rep[3].mismatches) == [0, M_K]


def test_make_history_refuses_wrong_shapes():
    cfg = SimulationConfig(n=2, m_k=1, steps=3)
    with pytest.raises(ValueError, match=r"Qn must have shape \(4, 1, 1, 2\)"):
        make_history(cfg, 4, Qn=np.zeros((4, 1, 2)))
    with pytest.raises(KeyError, match="unknown history array"):
        make_history(cfg, 4, Qx=np.zeros(3))


def test_simulated_signgd_obeys_and_gd_breaks_the_laws(tiny_config):
    """On the real simulator: SignGD gives zero mismatches; GD changes weights by
    eta * grad, not by +-eta, so every law has mismatches."""
    for optimizer, broken in (("signgd", False), ("gd", True)):
        rep = check_laws(quantities(train(tiny_config.replace(optimizer=optimizer)).history))
        for law in range(1, 7):
            assert rep[law].checked[0] > 0, f"{optimizer} law {law} checked"
            assert (rep[law].mismatches[0] > 0) == broken, f"{optimizer} law {law}"
