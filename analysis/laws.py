"""Checks of the six exact one-step laws of SignGD (``docs/theory.md`` section 5).

For every pair of consecutive recorded steps ``(t, t + 1)`` each observed change is
compared with the law's prediction from the state at ``t``::

    1. dVs     = 2 eta ||mu||
    2. dVn_i   = 2 eta ||xi_i||_1
    3. dQn_si  = eta ||xi_i||_1 sign(Vn_i - Vs) sign(Kn_si - Ks_s)
    4. dKn_si  = eta ||xi_i||_1 sign(Vn_i - Vs) sign(s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si)
    5. dQs_s   = eta ||mu|| sign( sum_i |l'_i| s_i11 s_i12 (Vn_i - Vs)(Kn_si - Ks_s) )
    6. dKs_s   = -eta ||mu|| sign( sum_i |l'_i| (Vn_i - Vs)(s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si) )

A change matches when ``|observed - predicted| <= tol * step + 32 eps (|x_t| + |x_{t+1}|)``
with ``step`` the law's step size (``eta ||mu||`` or ``eta ||xi_i||_1``): ``tol`` is
relative to one step, and the second term is the rounding of the recorded values.

Items where the law's assumptions fail are not counted as matches or mismatches but
reported apart, by reason (:data:`REASONS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .quantities import Quantities

LAWS = (1, 2, 3, 4, 5, 6)
LAW_TITLES = {
    1: "dVs = 2 eta ||mu||",
    2: "dVn_i = 2 eta ||xi_i||_1",
    3: "dQn_si = h_i sgn(Vn_i-Vs) sgn(Kn_si-Ks_s)",
    4: "dKn_si = h_i sgn(Vn_i-Vs) sgn(s11s12 Qs + s21s22 Qn)",
    5: "dQs_s = eta ||mu|| sgn(key-noise vote)",
    6: "dKs_s = -eta ||mu|| sgn(query-noise vote)",
}
"""One-line statements of the laws (``h_i = eta ||xi_i||_1``)."""

MATCH, MISMATCH, SHARED, UNDERFLOW, DIRTY, AMBIGUOUS = range(6)
REASONS = {
    SHARED: "shared",          # sample shares noise coordinates with another sample
    UNDERFLOW: "underflow",    # l'_i == 0, a softmax output exactly 0, or a gradient < TINY
    DIRTY: "dirty_label",      # flipped label or signal not in patch 1
    AMBIGUOUS: "ambiguous",    # predicted sign of a value indistinguishable from 0
}
AMBIGUITY = 1e-10
"""A sign is ambiguous when ``|x|`` is below this fraction of the magnitudes it was
computed from: the simulator's gradient and the recorded quantities round
differently, so such a sign is not a prediction."""
_ROUND = 32 * np.finfo(float).eps
TINY = 1e-280
"""A gradient whose size (product of ``|l'_i| / n``, softmax factors and inner
products) falls below this is near or inside the subnormal range, where the
simulator's chain of products can round to exactly 0: such items are counted as
``underflow``, not as mismatches."""


@dataclass
class LawResult:
    """Outcome of one law over all consecutive recorded step pairs.

    ``checked``, ``matches``, ``mismatches``: (R,) int, per run; ``excluded``: reason
    -> (R,) int; ``max_error``: (R,) largest ``|observed - predicted| / step`` over
    checked items (nan if none); ``first_mismatch``: per run, ``(step, index...)`` of
    the first mismatch or None.
    """

    law: int
    checked: np.ndarray
    matches: np.ndarray
    mismatches: np.ndarray
    excluded: dict[str, np.ndarray]
    max_error: np.ndarray
    first_mismatch: list = field(default_factory=list)

    @property
    def title(self) -> str:
        return LAW_TITLES[self.law]


@dataclass
class LawReport:
    """All six laws: ``results[law]``, plus how many step pairs could be checked."""

    results: dict[int, LawResult]
    step_pairs: int          # consecutive recorded pairs (t, t + 1) used
    gaps: int                # recorded pairs further apart, not checked
    tol: float

    def __getitem__(self, law: int) -> LawResult:
        return self.results[law]


def _sign(x: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sign(x)`` and a mask of signs too close to zero to trust (see AMBIGUITY)."""
    return np.sign(x), (x != 0) & (np.abs(x) <= AMBIGUITY * scale)


def consecutive_pairs(step: np.ndarray) -> np.ndarray:
    """Indices ``k`` of records with ``step[k + 1] == step[k] + 1``."""
    return np.flatnonzero(np.diff(step) == 1)


def _classify(obs, pred, step_size, before, after, tol, excluded_code, ambiguous):
    """Status code per item: MATCH / MISMATCH, overridden by exclusions."""
    allow = tol * step_size + _ROUND * (np.abs(before) + np.abs(after))
    err = np.abs(obs - pred)
    code = np.where(err <= allow, MATCH, MISMATCH).astype(np.int8)
    code = np.where(ambiguous, AMBIGUOUS, code)
    code = np.where(excluded_code > 0, excluded_code, code)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(step_size > 0, err / np.where(step_size > 0, step_size, 1.0), err)
    return code, rel


def _summarize(law, code, rel, steps_before, run_axis=1) -> LawResult:
    """Per-run counts of a status array whose axis 0 is the step pair, axis 1 the run."""
    R = code.shape[run_axis]
    flat = code.reshape(code.shape[0], R, int(np.prod(code.shape[2:], dtype=np.int64)))
    relf = np.broadcast_to(rel, code.shape).reshape(flat.shape)
    counted = (flat == MATCH) | (flat == MISMATCH)
    matches = (flat == MATCH).sum(axis=(0, 2))
    mismatches = (flat == MISMATCH).sum(axis=(0, 2))
    excluded = {name: (flat == c).sum(axis=(0, 2)) for c, name in REASONS.items()}
    max_error = np.full(R, np.nan)
    first = []
    for r in range(R):
        if counted[:, r].any():
            max_error[r] = float(relf[:, r][counted[:, r]].max())
        bad = np.argwhere(code[:, r] == MISMATCH)
        first.append(None if bad.size == 0 else
                     (int(steps_before[bad[0][0]]),) + tuple(int(v) for v in bad[0][1:]))
    return LawResult(law, matches + mismatches, matches, mismatches, excluded, max_error, first)


def check_laws(q: Quantities, *, tol: float = 1e-9) -> LawReport:
    """Compare every one-step change between consecutive records with laws 1-6.

    Parameters
    ----------
    q : Quantities
    tol : float
        Allowed ``|observed - predicted|`` as a fraction of the law's step size.

    Returns
    -------
    LawReport
        Per law and run: items checked, matches, mismatches, and excluded items by
        reason (``shared``, ``underflow``, ``dirty_label``, ``ambiguous``).
    """
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    k = consecutive_pairs(q.step)
    a, b = k, k + 1
    gaps = int(np.count_nonzero(np.diff(q.step) != 1))
    P, R = k.size, q.R
    n, m_k = q.Vn.shape[-1], q.Qs.shape[-1]
    eta, mu = q.eta, q.mu_norm
    h = q.noise_step                                              # (R, n)

    # --- exclusions at the earlier step of each pair --------------------------------
    S = np.stack([q.s11[a], q.s12[a], q.s21[a], q.s22[a]], -1)   # (P, R, n, 4)
    under = (q.lprime[a] == 0) | (S == 0).any(-1)                 # (P, R, n)
    sample_code = np.zeros((P, R, n), np.int8)
    sample_code[under] = UNDERFLOW
    sample_code[:, ~q.clean] = DIRTY
    sample_code[:, q.shared > 0] = SHARED
    run_dirty = ~q.clean.all(-1)                                  # (R,)

    results: dict[int, LawResult] = {}
    steps_before = q.step[a]

    # law 1: dVs = 2 eta ||mu||
    lp = np.abs(q.lprime[a]) / n                                  # (P, R, n)
    ex1 = np.zeros((P, R), np.int8)
    ex1[(lp * (q.s11[a] + q.s21[a]) * mu).max(-1) < TINY] = UNDERFLOW
    ex1[:, run_dirty] = DIRTY
    obs = q.Vs[b] - q.Vs[a]
    code, rel = _classify(obs, 2 * eta * mu, eta * mu, q.Vs[a], q.Vs[b], tol, ex1, False)
    results[1] = _summarize(1, code, rel, steps_before)

    # law 2: dVn_i = 2 eta ||xi_i||_1
    code2 = np.where((sample_code == 0) & (lp * (q.s12[a] + q.s22[a]) * h < TINY),
                     UNDERFLOW, sample_code).astype(np.int8)
    obs = q.Vn[b] - q.Vn[a]
    code, rel = _classify(obs, 2 * h, h, q.Vn[a], q.Vn[b], tol, code2, False)
    results[2] = _summarize(2, code, rel, steps_before)

    # law 3: dQn_si = eta ||xi_i||_1 sign(Vn_i - Vs) sign(Kn_si - Ks_s)
    gap = q.value_gap[a]                                          # (P, R, n)
    sg, amb_g = _sign(gap, np.abs(q.Vn[a]) + np.abs(q.Vs[a])[..., None])
    kd = q.Kn[a] - q.Ks[a][..., None]                             # (P, R, m_k, n)
    sk, amb_k = _sign(kd, np.abs(q.Kn[a]) + np.abs(q.Ks[a])[..., None])
    hb = h[None, :, None, :]                                      # (1, R, 1, n)
    pred = hb * sg[:, :, None, :] * sk
    code_ex = np.broadcast_to(sample_code[:, :, None, :], pred.shape)
    size3 = (lp * q.s21[a] * q.s22[a] * np.abs(gap))[:, :, None, :] * np.abs(kd) * hb
    code3 = np.where((code_ex == 0) & (size3 < TINY), UNDERFLOW, code_ex).astype(np.int8)
    obs = q.Qn[b] - q.Qn[a]
    code, rel = _classify(obs, pred, hb, q.Qn[a], q.Qn[b], tol, code3,
                          amb_g[:, :, None, :] | amb_k)
    results[3] = _summarize(3, code, rel, steps_before)

    # law 4: dKn_si = eta ||xi_i||_1 sign(Vn_i - Vs) sign(s11 s12 Qs + s21 s22 Qn)
    s1112, s2122 = q.s11[a] * q.s12[a], q.s21[a] * q.s22[a]      # (P, R, n)
    t1 = s1112[:, :, None, :] * q.Qs[a][..., None]
    t2 = s2122[:, :, None, :] * q.Qn[a]
    drive = t1 + t2                                               # (P, R, m_k, n)
    sd, amb_d = _sign(drive, np.abs(t1) + np.abs(t2))
    pred = hb * sg[:, :, None, :] * sd
    size4 = (lp * np.abs(gap))[:, :, None, :] * np.abs(drive) * hb
    code4 = np.where((code_ex == 0) & (size4 < TINY), UNDERFLOW, code_ex).astype(np.int8)
    obs = q.Kn[b] - q.Kn[a]
    code, rel = _classify(obs, pred, hb, q.Kn[a], q.Kn[b], tol, code4,
                          amb_g[:, :, None, :] | amb_d)
    results[4] = _summarize(4, code, rel, steps_before)

    # laws 5, 6: signal votes over samples (exact also for shared supports / underflow)
    w = np.abs(q.lprime[a]) * gap                                 # (P, R, n)
    terms5 = (np.abs(q.lprime[a]) * s1112)[:, :, None, :] * np.abs(gap)[:, :, None, :] * np.abs(kd)
    vote5 = ((w * s1112)[:, :, None, :] * kd).sum(-1)            # (P, R, m_k)
    v5, amb5 = _sign(vote5, terms5.sum(-1))                       # terms5: (P, R, m_k, n)
    ex56 = np.zeros((P, R, m_k), np.int8)
    ex56[:, run_dirty] = DIRTY
    ex5 = np.where((ex56 == 0) & ((terms5 / n).max(-1, initial=0.0) * mu < TINY),
                   UNDERFLOW, ex56).astype(np.int8)
    obs = q.Qs[b] - q.Qs[a]
    code, rel = _classify(obs, eta * mu * v5, eta * mu, q.Qs[a], q.Qs[b], tol, ex5, amb5)
    results[5] = _summarize(5, code, rel, steps_before)

    vote6 = (w[:, :, None, :] * drive).sum(-1)                    # (P, R, m_k)
    terms6 = np.abs(w)[:, :, None, :] * (np.abs(t1) + np.abs(t2))    # (P, R, m_k, n)
    v6, amb6 = _sign(vote6, terms6.sum(-1))
    ex6 = np.where((ex56 == 0) & ((terms6 / n).max(-1, initial=0.0) * mu < TINY),
                   UNDERFLOW, ex56).astype(np.int8)
    obs = q.Ks[b] - q.Ks[a]
    code, rel = _classify(obs, -eta * mu * v6, eta * mu, q.Ks[a], q.Ks[b], tol, ex6, amb6)
    results[6] = _summarize(6, code, rel, steps_before)
    return LawReport(results, step_pairs=int(P), gaps=gaps, tol=tol)


def signal_votes(q: Quantities) -> tuple[np.ndarray, np.ndarray]:
    """The majority votes of laws 5 and 6 at every record, each (T, R, m_k) in {-1, 0, 1}:

    ``vote_Q = sign( sum_i |l'_i| s_i11 s_i12 (Vn_i - Vs)(Kn_si - Ks_s) )`` (the sign
    ``Qs_s`` moves toward) and
    ``vote_K = -sign( sum_i |l'_i| (Vn_i - Vs)(s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si) )``.
    """
    w = np.abs(q.lprime) * q.value_gap                            # (T, R, n)
    kd = q.Kn - q.Ks[..., None]
    vote_q = np.sign(((w * q.s11 * q.s12)[:, :, None, :] * kd).sum(-1))
    vote_k = -np.sign((w[:, :, None, :] * q.key_drive).sum(-1))
    return vote_q, vote_k
