"""Closed-form predictions of the stages from the initial state (``docs/theory.md`` sections
5-6), to set next to what :mod:`analysis.stages` measures. They are SignGD's: every
step moves a noise inner product by exactly ``h_i = eta ||xi_i||_1``.

Stage I (laws 1-2). ``Vn_i - Vs`` changes by ``r_i = 2 eta (||xi_i||_1 - ||mu||)`` every
step, so it turns positive at ``T1_i = 0`` if ``D_i = Vn_i(0) - Vs(0) > 0``, else
``T1_i = floor(-D_i / r_i) + 1``; ``T1 = max_i T1_i``.

Stage II (laws 3-4 with the signals neglected: ``dQn = g h sign(Kn)``,
``dKn = g h sign(Qn)``, ``g = sign(Vn_i - Vs)``). Write ``c = Qn_si + Kn_si`` and
``k(x) = floor(|x| / h) + 1``, the steps a member moving toward zero needs to cross it.

* Before ``T1_i`` (``g = -1``) a pair with opposite signs moves apart and keeps ``c``.
  A pair with a common sign ``sigma`` shrinks. If its members cross zero at different
  steps, the smaller one crosses after ``k(min)`` steps and the pair then moves apart.
  If both cross at the same step (``k(Qn) = k(Kn)``), they land on the other side with a
  common sign again and cross back the next step: a period-2 oscillation until ``T1_i``.
* From ``T1_i`` a pair with a common sign keeps it (aligned at ``T1_i``). A pair with
  opposite signs keeps ``c`` while both move toward zero; its smaller member ``m``
  crosses after ``k = k(m)`` steps. The pair is then aligned with sign ``sign(c)`` at
  ``T1_i + k`` if the other member is still on its side, ``|c| + m - k h > 0``;
  otherwise both jumped and the pair oscillates with period 2 (``stuck``), which can
  only happen when ``|c| < h``.

Where the signals are not negligible. Laws 3-4 read ``Kn - Ks`` and
``Qn + rho_i Qs`` (``rho_i = s_i11 s_i12 / (s_i21 s_i22)``, about 1 early), not ``Kn`` and
``Qn``. Every step moves a member by exactly ``h``, so a member stays on its lattice
``x(0) + h Z`` and never comes closer to zero than ``d(x) = dist(x(0), h Z)``. The closed
form is therefore exact for a pair as long as ``d(Kn) > |Ks|`` and
``d(Qn) > rho_i |Qs|`` while the pair is decided; the signals move by at most
``eta ||mu||`` per step, so the bound used is their initial size plus that drift up to
the pair's alignment (:func:`decided_pairs`). Two consequences:

* A pair whose sum is within ``h + rho_i |Qs_s| + |Ks_s|`` of zero at its Stage II start
  is *at risk* (:func:`analysis.stages.pair_at_risk`): its fate may be decided by the
  signals, and ``T2`` leaves it out.
* Which at-risk pairs end stuck is predicted only for *decided* pairs; the others are
  reported apart.

Stage III (laws 5-6). ``Qs_s`` moves toward
``vote_Q = sign( sum_i |l'_i| s_i11 s_i12 (Vn_i - Vs)(Kn_si - Ks_s) )`` and ``Ks_s`` toward
``vote_K = -sign( sum_i |l'_i| (Vn_i - Vs)(s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si) )``. Every
factor has a closed form while the softmax is near 1/2 (``s_i11 s_i12 = s_i21 s_i22 = 1/4``;
:func:`votes_at`): ``Vs(t)`` and ``Vn_i(t)`` by laws 1-2, hence the value gap and
``|l'_i| = 1 / (1 + exp(Vs + Vn_i))``; and a pair that aligned at ``A`` with sign ``a``
grows by ``a h_i`` per step from its value at ``A`` (laws 3-4). The signals are small next
to the aligned noise and enter at their initial values. Only pairs not at risk vote: an
at-risk pair's sign is not predicted, so a neuron's vote is *decided* only when its
at-risk pairs' terms together are smaller than the vote's margin. Once the softmax
leaves 1/2 (Stage IV under way), ``s_i21 s_i22 Qn`` shrinks next to ``s_i11 s_i12 Qs`` and
the closed form no longer describes the votes.

Stage IV. Long after alignment ``Vn_i - Vs ~ r_i t`` and ``|Kn_si| ~ h_i t``, so the query
signal ends with the late majority ``sign( sum_i r_i h_i a_si )`` (``|l'_i|`` taken equal).
A pair whose aligned sign differs from it is a *minority* pair: its key noise, then its
query noise, are predicted to flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .quantities import Quantities
from .stages import OSCILLATION_FLIPS, pair_at_risk


@dataclass
class Predictions:
    """Closed-form predictions from the record at step 0, per run.

    ``T1_sample`` (R, n), ``T1`` (R,): Stage I crossing (nan: never).
    ``pair_sum`` (R, m_k, n): ``Qn + Kn`` at the pair's Stage II start.
    ``aligned_sign`` (R, m_k, n): predicted common sign (0 for stuck pairs).
    ``align_step`` (R, m_k, n): predicted alignment step (nan for stuck pairs).
    ``stuck`` (R, m_k, n): predicted period-2 oscillation from the Stage II start on.
    ``oscillates`` (R, m_k, n): predicted to change sign at ``OSCILLATION_FLIPS``
    consecutive steps (stuck, or a common-sign pair crossing zero together in Stage I).
    ``near_zero`` (R, m_k, n): both members come within one step of zero (at risk, or
    crossing together in Stage I): the only pairs that can oscillate.
    ``at_risk`` (R, m_k, n): ``|Qn + Kn| < h_i + rho_i |Qs_s| + |Ks_s|`` at the Stage II start.
    ``decided`` (R, m_k, n): the signals cannot change the closed form's answer
    (:func:`decided_pairs`).
    ``oscillation_start`` (R, m_k, n): first step of the predicted oscillation (nan if none).
    ``T2`` (R,): last alignment among pairs not at risk (as :mod:`analysis.stages`).
    ``Qs_sign``, ``Ks_sign`` (R, m_k): the late majority, ``sign( sum_i r_i h_i a_si )``
    (module doc, Stage IV); the votes at a given step are :func:`votes_at`'s.
    ``Q_align``, ``K_align`` (R, m_k, n): the pair when it first shares a sign.
    ``minority`` (R, m_k, n): pairs predicted to flip in Stage IV.
    """

    T1_sample: np.ndarray
    T1: np.ndarray
    pair_sum: np.ndarray
    aligned_sign: np.ndarray
    align_step: np.ndarray
    stuck: np.ndarray
    oscillates: np.ndarray
    near_zero: np.ndarray
    at_risk: np.ndarray
    decided: np.ndarray
    oscillation_start: np.ndarray
    T2: np.ndarray
    Qs_sign: np.ndarray
    Ks_sign: np.ndarray
    minority: np.ndarray
    Q_align: np.ndarray
    K_align: np.ndarray


def crossing_time(D0: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """First integer ``t >= 0`` with ``D0 + rate t > 0`` (nan if never)."""
    D0, rate = np.broadcast_arrays(np.asarray(D0, float), np.asarray(rate, float))
    out = np.full(D0.shape, np.nan)
    out[D0 > 0] = 0.0
    grow = (D0 <= 0) & (rate > 0)
    out[grow] = np.floor(-D0[grow] / rate[grow]) + 1
    return out


def steps_to_cross(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``k(x) = floor(|x| / h) + 1``: steps of size ``h`` toward zero until ``x`` crosses it."""
    return np.floor(np.abs(x) / h) + 1


def lattice_distance(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``dist(x, h Z)``: the closest a value moving by steps of exactly ``h`` comes to zero."""
    f = np.mod(x / h, 1.0)
    return np.minimum(f, 1.0 - f) * h


def stage_one(Q0, K0, h, t1):
    """The pair ``(Qn, Kn)`` after ``t1`` steps of Stage I (``g = -1``; module doc).

    All arguments broadcast to (R, m_k, n). Returns ``(Q1, K1, together, k0)``:
    the pair at ``t1``; whether its members crossed zero at the same step (then it
    oscillated with period 2 from step ``k0`` until ``t1``); ``k0 = min(k(Q0), k(K0))``.
    """
    sigma = np.sign(Q0 + K0)
    same = np.sign(Q0) * np.sign(K0) > 0
    a, b = np.abs(Q0), np.abs(K0)
    kq, kb = steps_to_cross(a, h), steps_to_cross(b, h)
    k0 = np.minimum(kq, kb)
    together = same & (kq == kb) & (k0 <= t1)
    one_crossed = same & (k0 <= t1) & ~together
    shrinking = same & (k0 > t1)
    # opposite signs: both move away from zero for t1 steps
    Q1, K1 = Q0 + np.sign(Q0) * t1 * h, K0 + np.sign(K0) * t1 * h
    # common sign, nobody crossed yet: both shrink for t1 steps
    Q1 = np.where(shrinking, Q0 - sigma * t1 * h, Q1)
    K1 = np.where(shrinking, K0 - sigma * t1 * h, K1)
    # common sign, the smaller crosses at k0 and keeps going; the larger turns back at k0
    smaller = sigma * (np.minimum(a, b) - t1 * h)
    larger = sigma * (np.maximum(a, b) - k0 * h + (t1 - k0) * h)
    Q1 = np.where(one_crossed, np.where(kq < kb, smaller, larger), Q1)
    K1 = np.where(one_crossed, np.where(kq < kb, larger, smaller), K1)
    # common sign, both cross at k0: they swap sides every step until t1
    even = np.mod(t1 - k0, 2) == 0
    Q1 = np.where(together, np.where(even, -sigma * (k0 * h - a), sigma * (a - (k0 - 1) * h)), Q1)
    K1 = np.where(together, np.where(even, -sigma * (k0 * h - b), sigma * (b - (k0 - 1) * h)), K1)
    return Q1, K1, together, k0


def stage_two(Q1, K1, h, t1):
    """Alignment from the Stage II start ``(Q1, K1)`` at step ``t1`` (module doc).

    Returns ``(aligned_sign, align_step, stuck)``: the pair's common sign and the step
    at which it first shares it (0 and nan for stuck pairs), and whether it is stuck.
    """
    c = Q1 + K1
    aligned_at_start = np.sign(Q1) * np.sign(K1) > 0
    m = np.minimum(np.abs(Q1), np.abs(K1))
    k = steps_to_cross(m, h)
    stuck = ~aligned_at_start & ~(np.abs(c) + m - k * h > 0)
    align_step = np.where(aligned_at_start, t1, np.where(stuck, np.nan, t1 + k))
    aligned_sign = np.where(aligned_at_start, np.sign(Q1), np.where(stuck, 0.0, np.sign(c)))
    return aligned_sign, align_step, stuck


def signal_offsets(q: Quantities, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rho_i |Qs_s|, |Ks_s|)`` at record ``k``, each (R, m_k, n): how far laws 4 and 3
    read the query and key noise away from their own values (module doc)."""
    rho = (q.s11[k] * q.s12[k] / (q.s21[k] * q.s22[k]))[:, None, :]        # (R, 1, n)
    off_q = rho * np.abs(q.Qs[k])[..., None]
    off_k = np.broadcast_to(np.abs(q.Ks[k])[..., None], off_q.shape)
    return off_q, off_k


def decided_pairs(q: Quantities, until: np.ndarray) -> np.ndarray:
    """Pairs whose closed form the signals cannot change before step ``until``
    (R, m_k, n): ``dist(Qn(0), h Z) > rho_i (|Qs_s(0)| + eta ||mu|| until)`` and
    ``dist(Kn(0), h Z) > |Ks_s(0)| + eta ||mu|| until``. False where ``until`` is nan."""
    h = q.noise_step[:, None, :]
    off_q, off_k = signal_offsets(q)
    rho = (q.s11[0] * q.s12[0] / (q.s21[0] * q.s22[0]))[:, None, :]
    drift = q.signal_step * np.nan_to_num(until, nan=np.inf)
    with np.errstate(invalid="ignore"):
        return ((lattice_distance(q.Qn[0], h) > off_q + rho * drift)
                & (lattice_distance(q.Kn[0], h) > off_k + drift))


def _last(x: np.ndarray, skip: np.ndarray) -> np.ndarray:
    """Largest entry of ``x`` (R, m_k, n) over pairs not in ``skip``, per run (nan if none)."""
    keep = np.where(skip, np.nan, x)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(keep).all(axis=(1, 2)), np.nan,
                        np.nanmax(np.where(np.isnan(keep), -np.inf, keep), axis=(1, 2)))


def predict(q: Quantities) -> Predictions:
    """Predictions of Stages I-IV from the first record of ``q`` (module doc)."""
    Vs0, Vn0 = q.Vs[0], q.Vn[0]                                  # (R,), (R, n)
    rate = 2 * q.eta * (q.xi_l1 - q.mu_norm)                     # (R, n)
    T1_sample = crossing_time(Vn0 - Vs0[:, None], rate)          # (R, n)
    T1 = _last(T1_sample[:, None, :], np.isnan(T1_sample[:, None, :]))
    T1 = np.where(np.isnan(T1_sample).any(-1), np.nan, T1)

    h = q.noise_step[:, None, :]                                 # (R, 1, n)
    # Stage II starts for a sample whose value gap turns positive and whose noise moves
    starts = np.isfinite(T1_sample)[:, None, :] & (h > 0)        # (R, 1, n)
    h = np.where(h > 0, h, 1.0)                                  # (masked out by starts)
    Q0, K0 = q.Qn[0], q.Kn[0]                                    # (R, m_k, n)
    t1 = np.nan_to_num(T1_sample)[:, None, :] + np.zeros(Q0.shape)
    Q1, K1, together, k0 = stage_one(Q0, K0, h, t1)
    c = Q1 + K1                                                  # sum at Stage II start
    aligned_sign, align_step, stuck = stage_two(Q1, K1, h, t1)
    stuck &= starts
    align_step = np.where(starts, align_step, np.nan)
    aligned_sign = np.where(starts, aligned_sign, 0.0)
    oscillates = stuck | (starts & together & (t1 - k0 + 1 >= OSCILLATION_FLIPS))

    off_q, off_k = signal_offsets(q)
    at_risk = starts & pair_at_risk(c, h, off_q + off_k)
    near_zero = at_risk | (starts & together)
    # a pair is decided until it has aligned, or has oscillated OSCILLATION_FLIPS times
    until = np.where(np.isnan(align_step),
                     t1 + steps_to_cross(np.minimum(np.abs(Q1), np.abs(K1)), h) + OSCILLATION_FLIPS,
                     align_step) + 1
    decided = starts & decided_pairs(q, until)
    k_stuck = t1 + steps_to_cross(np.minimum(np.abs(Q1), np.abs(K1)), h)
    oscillation_start = np.where(stuck, k_stuck, np.where(oscillates, k0, np.nan))
    T2 = _last(align_step, at_risk | np.isnan(align_step))

    # the pair when it first shares a sign: at t1, or k steps later (both moved toward zero)
    k = steps_to_cross(np.minimum(np.abs(Q1), np.abs(K1)), h)
    at_start = np.sign(Q1) * np.sign(K1) > 0
    Q_align = np.where(at_start, Q1, Q1 - np.sign(Q1) * k * h)
    K_align = np.where(at_start, K1, K1 - np.sign(K1) * k * h)
    # Stage IV's majority: long after alignment Vn_i - Vs ~ r_i t and |Kn_si| ~ h_i t, so
    # the vote weighs each aligned sign by r_i h_i (the l'_i are taken equal)
    weight = (rate * q.noise_step)[:, None, :]                   # (R, 1, n)
    Qs_sign = np.sign((weight * aligned_sign).sum(-1))           # (R, m_k)
    Ks_sign = -Qs_sign
    minority = (aligned_sign != 0) & (aligned_sign != Qs_sign[..., None])
    return Predictions(T1_sample=T1_sample, T1=T1, pair_sum=c, aligned_sign=aligned_sign,
                       align_step=align_step, stuck=stuck, oscillates=oscillates,
                       near_zero=near_zero, at_risk=at_risk, decided=decided,
                       oscillation_start=oscillation_start, T2=T2, Qs_sign=Qs_sign,
                       Ks_sign=Ks_sign, minority=minority,
                       Q_align=Q_align, K_align=K_align)


def votes_at(q: Quantities, p: Predictions, t: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The votes of laws 5-6 predicted at step ``t[r]`` of each run (module doc).

    Returns ``(vote_Q, vote_K, decided)``, each (R, m_k): the signs ``Qs_s`` and ``Ks_s``
    move toward, and whether the at-risk pairs could not turn either of them.
    """
    return _votes(q, np.asarray(t, float), p.align_step, p.aligned_sign, p.at_risk,
                  p.Q_align, p.K_align)


def _votes(q, t, align_step, aligned_sign, at_risk, Q_align, K_align):
    h = q.noise_step[:, None, :]                                 # (R, 1, n)
    since = np.maximum(t[:, None, None] - np.nan_to_num(align_step, nan=0.0), 0.0)
    Qn = Q_align + aligned_sign * h * since                      # (R, m_k, n)  laws 3-4
    Kn = K_align + aligned_sign * h * since
    Vs = q.Vs[0] + 2 * q.signal_step * t                         # (R,)   law 1
    Vn = q.Vn[0] + 2 * q.noise_step * t[:, None]                 # (R, n) law 2
    w = (expit(-(Vs[:, None] + Vn)) * (Vn - Vs[:, None]))[:, None, :]   # |l'_i| gap_i
    term_q = w * (Kn - q.Ks[0][..., None])                       # (R, m_k, n)
    term_k = w * (Qn + q.Qs[0][..., None])
    safe = ~at_risk & (aligned_sign != 0)
    vote_q = (term_q * safe).sum(-1)
    vote_k = -(term_k * safe).sum(-1)
    decided = ((np.abs(term_q) * at_risk).sum(-1) < np.abs(vote_q)) & \
              ((np.abs(term_k) * at_risk).sum(-1) < np.abs(vote_k))
    return np.sign(vote_q), np.sign(vote_k), decided
