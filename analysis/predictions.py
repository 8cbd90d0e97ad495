"""Closed-form predictions of the stages from the initial state (``SETTING.md`` sections
5-6), to set next to what :mod:`analysis.stages` measures.

Stage I (laws 1-2). ``Vn_i - Vs`` changes by ``r_i = 2 eta (||xi_i||_1 - ||mu||)`` every
step, so it turns positive at ``T1_i = 0`` if ``D_i = Vn_i(0) - Vs(0) > 0``, else
``T1_i = floor(-D_i / r_i) + 1``; ``T1 = max_i T1_i``.

Stage II (laws 3-4 with the signals neglected, ``|Qs|, |Ks| << |Qn|``). Write ``h_i =
eta ||xi_i||_1`` and ``c = Qn_si + Kn_si``.

* Before ``T1_i`` (``Vn_i < Vs``) a pair with opposite signs moves apart and keeps ``c``;
  a pair with a common sign ``sigma`` shrinks, ``c`` changing by ``-2 sigma h_i`` per step,
  until its smaller member crosses zero after ``floor(m / h_i) + 1`` steps
  (``m = min(|Qn|, |Kn|)``).
* From ``T1_i`` a pair with a common sign keeps it (aligned at ``T1_i``). A pair with
  opposite signs keeps ``c`` while both move toward each other; its smaller member
  crosses zero after ``k = floor(m / h_i) + 1`` steps. The pair is then aligned with
  sign ``sign(c)`` at ``T1_i + k`` if the other member is still on its side,
  ``|c| + m - k h_i > 0``; otherwise both jumped and the pair oscillates with period 2
  (``stuck``), which can only happen when ``|c| < h_i``.

Stage III (laws 5-6). With all pairs aligned, ``Qs_s`` moves toward
``sign( sum_i (Vn_i - Vs) Kn_si )`` and ``Ks_s`` toward ``-sign( sum_i (Vn_i - Vs) Qn_si )``
(softmax products and ``l'_i`` taken equal across samples early on). Once the aligned
pairs grow linearly, ``Vn_i - Vs ~ r_i t`` and ``|Kn_si|, |Qn_si| ~ h_i t``, so both votes
are the weighted majority ``sign( sum_i r_i h_i a_si )`` of the aligned signs ``a_si``
(with a minus sign for ``Ks_s``).

Stage IV. A pair whose aligned sign differs from its neuron's predicted query-signal sign
is a *minority* pair: its key noise, then its query noise, are predicted to flip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quantities import Quantities


@dataclass
class Predictions:
    """Closed-form predictions from the record at step 0, per run.

    ``T1_sample`` (R, n), ``T1`` (R,): Stage I crossing (nan: never).
    ``pair_sum`` (R, m_k, n): ``Qn + Kn`` at the pair's Stage II start.
    ``aligned_sign`` (R, m_k, n): predicted common sign (0 for stuck pairs).
    ``align_step`` (R, m_k, n): predicted alignment step (nan for stuck pairs).
    ``stuck`` (R, m_k, n): predicted period-2 oscillation.
    ``at_risk`` (R, m_k, n): ``|Qn + Kn| < eta ||xi_i||_1`` at the Stage II start.
    ``T2`` (R,): last alignment among pairs not at risk (as :mod:`analysis.stages`).
    ``Qs_sign``, ``Ks_sign`` (R, m_k): majority-vote signs of Stage III.
    ``minority`` (R, m_k, n): pairs predicted to flip in Stage IV.
    """

    T1_sample: np.ndarray
    T1: np.ndarray
    pair_sum: np.ndarray
    aligned_sign: np.ndarray
    align_step: np.ndarray
    stuck: np.ndarray
    at_risk: np.ndarray
    T2: np.ndarray
    Qs_sign: np.ndarray
    Ks_sign: np.ndarray
    minority: np.ndarray


def crossing_time(D0: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """First integer ``t >= 0`` with ``D0 + rate t > 0`` (nan if never)."""
    D0, rate = np.broadcast_arrays(np.asarray(D0, float), np.asarray(rate, float))
    out = np.full(D0.shape, np.nan)
    out[D0 > 0] = 0.0
    grow = (D0 <= 0) & (rate > 0)
    out[grow] = np.floor(-D0[grow] / rate[grow]) + 1
    return out


def predict(q: Quantities) -> Predictions:
    """Predictions of Stages I-IV from the first record of ``q`` (module doc)."""
    Vs0, Vn0 = q.Vs[0], q.Vn[0]                                  # (R,), (R, n)
    rate = 2 * q.eta * (q.xi_l1 - q.mu_norm)                     # (R, n)
    T1_sample = crossing_time(Vn0 - Vs0[:, None], rate)          # (R, n)
    with np.errstate(invalid="ignore"):
        T1 = np.where(np.isnan(T1_sample).any(-1), np.nan, np.nanmax(
            np.where(np.isnan(T1_sample), -np.inf, T1_sample), axis=-1))

    h = q.noise_step[:, None, :]                                 # (R, 1, n)
    # Stage II starts for a sample whose value gap turns positive and whose noise moves
    starts = np.isfinite(T1_sample)[:, None, :] & (h > 0)        # (R, 1, n)
    h = np.where(h > 0, h, 1.0)                                  # (masked out by starts)
    t1 = np.nan_to_num(T1_sample)[:, None, :]                   # (R, 1, n)
    Q0, K0 = q.Qn[0], q.Kn[0]                                    # (R, m_k, n)
    sigma = np.sign(Q0 + K0)
    same0 = np.sign(Q0) * np.sign(K0) > 0
    k0 = np.floor(np.minimum(np.abs(Q0), np.abs(K0)) / h) + 1    # steps until one crosses
    crossed = same0 & (k0 <= t1)
    # Stage I, t1 steps with Vn_i < Vs: a common-sign pair shrinks (until its smaller
    # member crosses zero), an opposite-sign pair moves apart keeping its sum
    shrink = np.where(same0, np.minimum(k0, t1), 0.0) * h
    Q1, K1 = Q0 - sigma * same0 * shrink, K0 - sigma * same0 * shrink
    apart = np.where(same0, np.where(crossed, t1 - k0, 0.0), t1) * h
    Q1, K1 = Q1 + np.sign(Q1) * apart, K1 + np.sign(K1) * apart
    c = Q1 + K1                                                  # sum at Stage II start

    aligned_at_start = np.sign(Q1) * np.sign(K1) > 0
    m1 = np.minimum(np.abs(Q1), np.abs(K1))
    k = np.floor(m1 / h) + 1
    survives = np.abs(c) + m1 - k * h > 0
    stuck = ~aligned_at_start & ~survives & starts
    align_step = np.where(aligned_at_start, t1, t1 + k)
    align_step = np.where(stuck | ~starts, np.nan, align_step)
    aligned_sign = np.where(stuck | ~starts, 0.0,
                            np.where(aligned_at_start, np.sign(Q1), np.sign(c)))
    at_risk = starts & (np.abs(c) < h)
    safe = np.where(at_risk, np.nan, align_step)                 # T2 leaves out at-risk pairs
    with np.errstate(invalid="ignore"):
        T2 = np.where(np.isnan(safe).all(axis=(1, 2)), np.nan,
                      np.nanmax(np.where(np.isnan(safe), -np.inf, safe), axis=(1, 2)))

    # Stage III: majority votes once the aligned pairs grow linearly, gap_i ~ r_i t and
    # |Kn_si|, |Qn_si| ~ h_i t, so each sample weighs r_i h_i
    weight = (rate * q.noise_step)[:, None, :]                   # (R, 1, n)
    Qs_sign = np.sign((weight * aligned_sign).sum(-1))           # (R, m_k)
    Ks_sign = -Qs_sign
    minority = (aligned_sign != 0) & (aligned_sign != Qs_sign[..., None])
    return Predictions(T1_sample=T1_sample, T1=T1, pair_sum=c, aligned_sign=aligned_sign,
                       align_step=align_step, stuck=stuck, at_risk=at_risk, T2=T2, Qs_sign=Qs_sign,
                       Ks_sign=Ks_sign, minority=minority)
