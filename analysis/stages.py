"""Detection of the four stages of SignGD training (``SETTING.md`` section 6) in a
recorded history.

Each stage time is a training step (float, ``nan`` when it never happens), per run:

* ``T1`` (value noise takes over): first record from which ``Vn_i > Vs`` for every
  sample ``i`` until the end.
* ``T2`` (query-key noise sign alignment): first record at which every pair
  ``(Qn_si, Kn_si)`` shares a non-zero sign, leaving out the *at-risk* pairs: those
  whose sum at their own Stage II start is smaller than one step,
  ``|Qn_si + Kn_si| < eta ||xi_i||_1``. Such a pair can overshoot and oscillate with
  period 2 (a discrete-time effect); they are counted and reported apart, and
  ``T2_all`` gives the time including them (``nan`` if they never align).
* ``T3`` (majority voting): first record at or after ``T1`` at which, for every neuron
  ``s``, ``sign(Qs_s)`` equals the vote of law 5 and ``sign(Ks_s)`` the vote of law 6.
  The votes are weighted (by ``|l'_i|`` and the softmax), so the majority can shift
  later and a signal can lag behind it for a while; ``T3_settled`` is the first record
  from which the agreement holds until the end.
* ``T4`` (noise-signal softmax decay): first record from which every
  ``s_{i,21} < threshold * s_{i,21}(0)`` until the end (default threshold 1%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .laws import signal_votes
from .quantities import Quantities

S21_THRESHOLD = 0.01
"""T4 threshold: ``s_{i,21}`` below 1% of its initial value (about 1/2)."""


def first_from(ok: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Step of the first record from which ``ok`` holds until the end.

    ``ok``: (T, R) bool. Returns (R,) float, ``nan`` where ``ok`` is false at the end.
    """
    T = ok.shape[0]
    fails = ~ok
    # index of the last failing record (+1), or 0 if it never fails
    last_fail = np.where(fails.any(0), T - 1 - np.argmax(fails[::-1], axis=0), -1)
    idx = last_fail + 1
    out = np.full(ok.shape[1], np.nan)
    good = idx < T
    out[good] = step[idx[good]]
    return out


def first_at(ok: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Step of the first record at which ``ok`` holds, (R,) float (``nan``: never)."""
    hit = ok.any(0)
    out = np.full(ok.shape[1:], np.nan)
    out[hit] = step[np.argmax(ok, axis=0)[hit]]
    return out


def stage_one_start(q: Quantities) -> np.ndarray:
    """Per sample, the first record from which ``Vn_i > Vs`` until the end, (R, n)."""
    ok = q.value_gap > 0                                          # (T, R, n)
    T, R, n = ok.shape
    return first_from(ok.reshape(T, R * n), q.step).reshape(R, n)


def _value_at(x: np.ndarray, step: np.ndarray, when: np.ndarray) -> np.ndarray:
    """``x`` (T, R, m_k, n) at per-sample steps ``when`` (R, n); nan where ``when`` is nan."""
    idx = np.searchsorted(step, np.nan_to_num(when, nan=step[-1]))
    idx = np.clip(idx, 0, step.size - 1)                          # (R, n)
    R, n = when.shape
    out = x[idx[:, None, :], np.arange(R)[:, None, None], np.arange(x.shape[2])[None, :, None],
            np.arange(n)[None, None, :]]                          # (R, m_k, n)
    return np.where(np.isnan(when)[:, None, :], np.nan, out)


@dataclass
class Stages:
    """Detected stage times and the per-pair facts behind ``T2``.

    Times are (R,) float steps (``nan``: never). ``T1_sample`` is (R, n).
    ``at_risk``, ``oscillating``: (R, m_k, n) bool. ``pair_sum_at_start``:
    ``Qn_si + Kn_si`` at the pair's Stage II start (R, m_k, n).
    ``pair_align_step``: first record at or after the Stage II start at which the
    pair shares a sign (R, m_k, n; nan: never). ``aligned_sign``: that common sign
    (0 if never).
    """

    T1: np.ndarray
    T2: np.ndarray
    T2_all: np.ndarray
    T3: np.ndarray
    T3_settled: np.ndarray
    T4: np.ndarray
    T1_sample: np.ndarray
    at_risk: np.ndarray
    oscillating: np.ndarray
    pair_sum_at_start: np.ndarray
    pair_align_step: np.ndarray
    aligned_sign: np.ndarray
    s21_threshold: float


def oscillating_pairs(q: Quantities, min_flips: int = 4) -> np.ndarray:
    """Pairs whose query noise changes sign at ``min_flips`` consecutive recorded
    steps in a row (period-2 oscillation), (R, m_k, n) bool."""
    cons = np.diff(q.step) == 1                                   # (T-1,)
    flip = (np.sign(q.Qn[1:]) * np.sign(q.Qn[:-1]) < 0) & cons[:, None, None, None]
    if flip.shape[0] < min_flips:
        return np.zeros(flip.shape[1:], dtype=bool)
    windows = np.lib.stride_tricks.sliding_window_view(flip, min_flips, axis=0)
    return windows.all(-1).any(0)


def detect_stages(q: Quantities, *, s21_threshold: float = S21_THRESHOLD) -> Stages:
    """Detect ``T1 .. T4`` (module doc) in every run of ``q``."""
    if not 0 < s21_threshold < 1:
        raise ValueError(f"s21_threshold must be in (0, 1), got {s21_threshold!r}")
    step = q.step
    T1 = first_from((q.value_gap > 0).all(-1), step)
    T1_sample = stage_one_start(q)                                # (R, n)

    # Stage II: pairs share a sign; at-risk pairs reported apart
    start = _value_at(q.Qn + q.Kn, step, T1_sample)               # (R, m_k, n)
    h = q.noise_step[:, None, :]                                  # (R, 1, n)
    at_risk = np.abs(start) < h                                   # nan -> False
    same = (np.sign(q.Qn) == np.sign(q.Kn)) & (q.Qn != 0)         # (T, R, m_k, n)
    after = step[:, None, None] >= np.nan_to_num(T1_sample, nan=np.inf)[None]   # (T, R, n)
    aligned_now = same & after[:, :, None, :]
    T2 = first_at((aligned_now | at_risk[None]).all(axis=(2, 3)), step)
    T2_all = first_at(aligned_now.all(axis=(2, 3)), step)
    pair_align = first_at(aligned_now.reshape(step.size, -1), step).reshape(at_risk.shape)
    aligned_sign = np.where(np.isnan(pair_align), 0.0,
                            np.sign(_pair_value_at(q.Qn, step, pair_align)))

    # Stage III: signal signs agree with the majority votes of laws 5 and 6
    vote_q, vote_k = signal_votes(q)
    agree = ((np.sign(q.Qs) == vote_q) & (np.sign(q.Ks) == vote_k)).all(-1)
    T3 = first_at(agree & (step[:, None] >= np.nan_to_num(T1, nan=np.inf)[None]), step)
    T3_settled = first_from(agree, step)

    # Stage IV: s_{i,21} collapses
    T4 = first_from((q.s21 < s21_threshold * q.s21[0]).all(-1), step)
    return Stages(T1=T1, T2=T2, T2_all=T2_all, T3=T3, T3_settled=T3_settled, T4=T4, T1_sample=T1_sample,
                  at_risk=at_risk, oscillating=oscillating_pairs(q),
                  pair_sum_at_start=start, pair_align_step=pair_align,
                  aligned_sign=aligned_sign, s21_threshold=s21_threshold)


def _pair_value_at(x: np.ndarray, step: np.ndarray, when: np.ndarray) -> np.ndarray:
    """``x`` (T, R, m_k, n) at per-pair steps ``when`` (R, m_k, n); 0 where nan."""
    idx = np.clip(np.searchsorted(step, np.nan_to_num(when, nan=step[0])), 0, step.size - 1)
    out = np.take_along_axis(x, idx[None], axis=0)[0]
    return np.where(np.isnan(when), 0.0, out)
