"""Checks of the six exact one-step laws of SignGD (``docs/theory.md`` section 5).

For every pair of consecutive recorded steps ``(t, t + 1)`` each observed change is
compared with the law's prediction from the state at ``t``::

    1. dVs     = 2 eta ||mu||
    2. dVn_i   = 2 eta ||xi_i||_1
    3. dQn_si  = eta ||xi_i||_1 sign(Vn_i - Vs) sign(Kn_si - Ks_s)
    4. dKn_si  = eta ||xi_i||_1 sign(Vn_i - Vs) sign(s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si)
    5. dQs_s   = eta ||mu|| sign( sum_i |l'_i| s_i11 s_i12 (Vn_i - Vs)(Kn_si - Ks_s) )
    6. dKs_s   = -eta ||mu|| sign( sum_i |l'_i| (Vn_i - Vs)(s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si) )

With ``L > 2`` patches every noise patch ``(i, j)`` has its own laws 2-4 (``xi_ij``,
``Vn_ij``, ``Qn_sij``, ``Kn_sij``) and laws 3-6 take their ``L``-patch form
(:func:`drives`), of which the lines above are the case ``L = 2``; one check serves
every ``L``. It follows the other variants too: a score scale and pooling only scale
the gradients; feature noise ``alpha`` (noise patches ``xi_ij - alpha y mu``) puts the noise
patches' projections ``Vn - alpha Vs``, ... inside the signs and subtracts ``alpha`` times
the noise patches' votes in laws 1, 5 and 6 (coordinate 0 sits in every patch); with
mini-batches the votes run over the step's batch and the other samples do not move.

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


def drives(S: np.ndarray, Q: np.ndarray, K: np.ndarray, u: np.ndarray):
    """The factors whose signs the laws give, for any number of patches ``L``.

    With ``A_lk = S_lk sum_k' S_lk' (u_k - u_k')`` (the softmax backward of
    ``docs/theory.md`` section 2 without ``g``), the gradient of query ``l`` is
    ``g sum_k A_lk k_k`` and of key ``k`` is ``g sum_l A_lk q_l``, so SignGD moves
    (clean labels, ``g < 0``)::

        Qn_sij  by  eta ||xi_ij||_1 sign(Dq_ij,s),   Dq_l = sum_k A_lk K_k
        Kn_sij  by  eta ||xi_ij||_1 sign(Dk_ij,s),   Dk_k = sum_l A_lk Q_l
        Qs_s    by  eta ||mu|| sign(sum_i |l'_i| Dq_i0,s)
        Ks_s    by  eta ||mu|| sign(sum_i |l'_i| Dk_i0,s)

    With two patches ``Dq_2 = s21 s22 (Vn - Vs)(Kn - Ks)`` and
    ``Dk_2 = (Vn - Vs)(s11 s12 Qs + s21 s22 Qn)``: laws 3-6.

    ``S`` (..., L, L), ``Q, K`` (..., L, m_k), ``u`` (..., L). Returns ``Dq, Dk`` (..., L,
    m_k) and their scales (the same sums of absolute terms, for :func:`_sign`).
    """
    du = u[..., :, None] - u[..., None, :]                      # (..., L, L) u_k - u_k'
    A = S * np.matmul(S, np.swapaxes(du, -1, -2))               # A_lk
    A_abs = S * np.matmul(S, np.swapaxes(np.abs(du), -1, -2))
    Dq, Dk = np.matmul(A, K), np.matmul(np.swapaxes(A, -1, -2), Q)
    scale_q = np.matmul(A_abs, np.abs(K))
    scale_k = np.matmul(np.swapaxes(A_abs, -1, -2), np.abs(Q))
    return Dq, Dk, scale_q, scale_k


def check_laws(q: Quantities, *, tol: float = 1e-9) -> LawReport:
    """Compare every one-step change between consecutive records with laws 1-6, for
    any number of patches (:func:`drives`).

    Exclusions: a noise patch sharing coordinates (``shared``); a sample with a flipped
    label or its signal not in patch 1 (``dirty_label``; laws 1, 5, 6: any such sample
    of the run); ``l'_i == 0`` or a softmax output exactly 0, or a gradient below
    :data:`TINY` (``underflow``); a predicted sign too close to 0 (``ambiguous``).

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
    A, R, n, L, m_k = k.size, q.R, q.n, q.n_patches, q.Qs.shape[-1]
    eta, mu, alpha = q.eta, q.mu_norm, q.alpha
    S = q.S[a]                                                    # (A, R, n, L, L)
    Q, K, u = q.patch_stack(a)                                    # (A, R, n, L, m_k), (A, R, n, L)
    if alpha:       # the noise patches' projections: y_i W (xi_ij - alpha y_i mu) = Qn - alpha Qs, ...
        Q[..., 1:, :] -= alpha * Q[..., :1, :]
        K[..., 1:, :] -= alpha * K[..., :1, :]
        u[..., 1:] -= alpha * u[..., :1]
    Dq, Dk, scale_q, scale_k = drives(S, Q, K, u)
    batch = np.ones((A, R, n), bool) if q.batch is None else q.batch[a]   # the step's samples
    lp = np.abs(q.lprime[a]) * batch                              # (A, R, n) 0 off the batch
    on = np.tile(batch, (1, 1, L - 1))                            # (A, R, noise) patch in the batch

    def noise_rows(x):      # (A, R, n, P[, m_k]) -> (A, R[, m_k], noise), patch-major j n + i
        return q.noise_axis(np.moveaxis(x, 4, 2) if x.ndim == 5 else x)

    sample_code = np.zeros((A, R, n), np.int8)
    sample_code[((q.lprime[a] == 0) | (S == 0).any((-1, -2))) & batch] = UNDERFLOW
    sample_code[:, ~q.clean] = DIRTY
    code_noise = np.tile(sample_code, (1, 1, L - 1))              # (A, R, noise)
    code_noise[:, q.shared > 0] = SHARED
    run_dirty = ~q.clean.all(-1)
    steps_before = q.step[a]
    results: dict[int, LawResult] = {}

    def signal_vote(x, scale):
        """``sum_i |l'_i| (x_i0 - alpha sum_j x_ij)`` over the samples for ``x`` (A, R, n,
        L, X) (coordinate 0 is in the signal patch and, times ``-alpha``, in every noise
        patch), and its terms' sizes (A, R, n, X) from ``scale``."""
        w = lp[..., None]
        terms = w * (scale[:, :, :, 0] + alpha * scale[:, :, :, 1:].sum(3))
        return (w * (x[:, :, :, 0] - alpha * x[:, :, :, 1:].sum(3))).sum(2), terms

    # law 1: dVs = 2 eta ||mu|| sign(sum_i |l'_i| (sum_l s_l0 - alpha sum_j sum_l s_lj)),
    # which is +1 without feature noise
    col = S.sum(-2)[..., None]                                    # (A, R, n, L, 1) sum_l s_i,lk
    vote1, terms1 = (x[..., 0] for x in signal_vote(col, col))
    v1, amb1 = _sign(vote1, terms1.sum(2))
    ex1 = np.zeros((A, R), np.int8)
    ex1[(terms1 / n * mu).max(-1) < TINY] = UNDERFLOW
    ex1[:, run_dirty] = DIRTY
    code, rel = _classify(q.Vs[b] - q.Vs[a], 2 * eta * mu * v1, eta * mu, q.Vs[a], q.Vs[b], tol,
                          ex1, amb1)
    results[1] = _summarize(1, code, rel, steps_before)

    # law 2: dVn_ij = 2 eta ||xi_ij||_1 (0 off the step's batch)
    hn = q.noise_step[None]                                       # (1, R, noise)
    weight = noise_rows((lp / n)[..., None] * S[..., 1:].sum(-2))  # (A, R, noise)
    code2 = np.where((code_noise == 0) & on & (weight * hn < TINY), UNDERFLOW, code_noise).astype(np.int8)
    code, rel = _classify(q.Vn[b] - q.Vn[a], 2 * hn * on, hn, q.Vn[a], q.Vn[b], tol, code2, False)
    results[2] = _summarize(2, code, rel, steps_before)

    # laws 3, 4: dQn_sij = h_ij sign(Dq_ij,s), dKn_sij = h_ij sign(Dk_ij,s) (0 off the batch)
    hb = hn[:, :, None, :]                                        # (1, R, 1, noise)
    onb = on[:, :, None, :]
    code_ex = np.broadcast_to(code_noise[:, :, None, :], (A, R, m_k, n * (L - 1)))
    for law, D, scale, x in ((3, Dq, scale_q, q.Qn), (4, Dk, scale_k, q.Kn)):
        sD, amb = _sign(noise_rows(D[:, :, :, 1:]), noise_rows(scale[:, :, :, 1:]))
        size = (lp / n)[..., None, None] * np.abs(D[:, :, :, 1:])  # (A, R, n, P, m_k)
        code_l = np.where((code_ex == 0) & onb & (noise_rows(size) * hb < TINY), UNDERFLOW,
                          code_ex).astype(np.int8)
        code, rel = _classify(x[b] - x[a], hb * sD * onb, hb, x[a], x[b], tol, code_l, amb & onb)
        results[law] = _summarize(law, code, rel, steps_before)

    # laws 5, 6: dQs_s = eta ||mu|| sign(sum_i |l'_i| (Dq_i0,s - alpha sum_j Dq_ij,s)), and
    # dKs_s likewise with Dk
    ex56 = np.zeros((A, R, m_k), np.int8)
    ex56[:, run_dirty] = DIRTY
    for law, D, scale, x in ((5, Dq, scale_q, q.Qs), (6, Dk, scale_k, q.Ks)):
        vote, terms = signal_vote(D, scale)                       # (A, R, m_k), (A, R, n, m_k)
        v, amb = _sign(vote, terms.sum(2))
        ex = np.where((ex56 == 0) & ((terms / n).max(2) * mu < TINY), UNDERFLOW, ex56).astype(np.int8)
        code, rel = _classify(x[b] - x[a], eta * mu * v, eta * mu, x[a], x[b], tol, ex, amb)
        results[law] = _summarize(law, code, rel, steps_before)
    return LawReport(results, step_pairs=int(A), gaps=gaps, tol=tol)


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
