"""Detection of the four stages of SignGD training (``docs/theory.md`` section 6) in a
recorded history.

Each stage time is a training step (float, ``nan`` when it never happens), per run:

* ``T1`` (value noise takes over): first record from which ``Vn_i > Vs`` for every
  sample ``i`` until the end.
* ``T2`` (query-key noise sign alignment): first record at which every pair
  ``(Qn_si, Kn_si)`` shares a non-zero sign, leaving out the *at-risk* pairs: those
  whose sum at their own Stage II start is within one step plus the signal offsets of
  zero, ``|Qn_si + Kn_si| < h_i + rho_i |Qs_s| + |Ks_s|`` (:func:`pair_at_risk`;
  ``h_i = eta ||xi_i||_1``, ``rho_i = s_i11 s_i12 / (s_i21 s_i22)``). Laws 3-4 read
  ``Kn - Ks`` and ``Qn + rho_i Qs``, so the sign of such a pair's sum does not decide
  its fate: it can overshoot and oscillate with period 2 (a discrete-time effect), or
  the signals can push it back. They are counted and reported apart, and ``T2_all``
  gives the time including them (``nan`` if they never align).
* ``T3`` (majority voting): first record at or after ``T1`` at which, for every neuron
  ``s``, ``sign(Qs_s)`` equals the vote of law 5 and ``sign(Ks_s)`` the vote of law 6.
  The votes are weighted (by ``|l'_i|`` and the softmax), so the majority can shift
  later and a signal can lag behind it for a while; ``T3_settled`` is the first record
  from which the agreement holds until the end.
* ``T4`` (noise-signal softmax decay): first record from which every
  ``s_{i,21} < threshold * s_{i,21}(0)`` until the end (default threshold 1%).

Stage intervals (:func:`stage_of`). Stage ``k`` lasts from the end of stage ``k - 1``
(step 0 for Stage I) until ``T_k``; Stage IV lasts to the end of the run. When stage
times come out of order, a step belongs to the *earliest stage not yet complete*: with
``sigma_0 = 0.05`` the softmax collapse (``T4 = 1074``) happens inside Stage III, which
lasts until ``T3 = 3114``; Stage IV then starts at 3114. A stage whose time never comes
lasts to the end of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .laws import signal_votes
from .quantities import Quantities

S21_THRESHOLD = 0.01
"""T4 threshold: ``s_{i,21}`` below 1% of its initial value (about 1/2)."""

OSCILLATION_FLIPS = 4
"""A pair oscillates with period 2 when its query noise changes sign at this many
consecutive steps in a row."""

STAGES = ("I", "II", "III", "IV")


def pair_at_risk(pair_sum: np.ndarray, h: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Pairs whose sum at the Stage II start does not decide their fate:
    ``|Qn + Kn| < h_i + rho_i |Qs_s| + |Ks_s|`` (``offset`` is the sum of the two signal
    offsets). nan sums (no Stage II start) are not at risk."""
    with np.errstate(invalid="ignore"):
        return np.abs(pair_sum) < h + offset


def first_pending(times: np.ndarray, step) -> np.ndarray:
    """The earliest stage not yet complete at each step, per run: ``(len(step), R)``
    int, 0 .. 3 for Stages I .. IV and 4 once all four are complete. ``times``:
    ``(4, R)`` ``T1 .. T4`` (``nan``: never). The one rule of :func:`stage_of`, the
    report's intervals and the figures' stage names."""
    times = np.asarray(times, dtype=float)
    pending = np.asarray(step, dtype=float).reshape(-1)[:, None, None] < np.nan_to_num(times, nan=np.inf)[None]
    return np.where(pending.any(1), np.argmax(pending, axis=1), 4)      # (S, R)


def stage_of(stages: "Stages", step: np.ndarray) -> np.ndarray:
    """Which stage (1 .. 4) each step is in, per run: (len(step), R) int.

    Stage ``k`` lasts until ``T_k``; a step belongs to the earliest stage not yet
    complete, and to Stage IV once all four are (module doc). Covers every step:
    ``step`` may be the recorded steps or ``np.arange(steps + 1)``.
    """
    times = np.stack([stages.T1, stages.T2, stages.T3, stages.T4])       # (4, R)
    return np.minimum(first_pending(times, step) + 1, 4)


def stage_intervals(stages: "Stages", last_step: int, r: int = 0) -> list[dict]:
    """The stage intervals ``[start, end)`` of run ``r`` under :func:`stage_of`'s rule,
    as ``{"stage", "start", "end"}`` dicts (``end = last_step + 1`` for a stage lasting
    to the end); a stage whose interval is empty has ``start == end``."""
    out, start = [], 0
    for k, name in enumerate(("T1", "T2", "T3", "T4")):
        t = float(getattr(stages, name)[r])
        end = last_step + 1 if k == 3 or not np.isfinite(t) else int(max(t, start))
        end = min(end, last_step + 1)
        out.append({"stage": STAGES[k], "start": start, "end": end})
        start = end
    return out


def stage_overlaps(stages: "Stages", r: int = 0) -> str:
    """Stage times that come before an earlier stage's (``"T4<T3"``, ``;``-joined; empty
    when the four are in order)."""
    names = ("T1", "T2", "T3", "T4")
    t = [float(getattr(stages, n)[r]) for n in names]
    return ";".join(f"{names[j]}<{names[i]}" for i in range(4) for j in range(i + 1, 4)
                    if np.isfinite(t[i]) and np.isfinite(t[j]) and t[j] < t[i])


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


def oscillating_pairs(q: Quantities, min_flips: int = OSCILLATION_FLIPS) -> np.ndarray:
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
    at_risk = pair_at_risk(start, h, _offsets_at(q, T1_sample))   # nan -> False
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


def _offsets_at(q: Quantities, when: np.ndarray) -> np.ndarray:
    """``rho_i |Qs_s| + |Ks_s|`` at per-sample steps ``when`` (R, n), (R, m_k, n);
    0 where ``when`` is nan."""
    idx = np.clip(np.searchsorted(q.step, np.nan_to_num(when, nan=q.step[-1])), 0, q.step.size - 1)
    r = np.arange(when.shape[0])[:, None]                         # (R, 1)
    rho = (q.s11 * q.s12 / (q.s21 * q.s22))[idx, r, np.arange(when.shape[1])]   # (R, n)
    qs = np.abs(q.Qs[idx[:, None, :], r[:, :, None], np.arange(q.Qs.shape[2])[None, :, None]])
    ks = np.abs(q.Ks[idx[:, None, :], r[:, :, None], np.arange(q.Ks.shape[2])[None, :, None]])
    out = rho[:, None, :] * qs + ks                               # (R, m_k, n)
    return np.where(np.isnan(when)[:, None, :], 0.0, out)


def _pair_value_at(x: np.ndarray, step: np.ndarray, when: np.ndarray) -> np.ndarray:
    """``x`` (T, R, m_k, n) at per-pair steps ``when`` (R, m_k, n); 0 where nan."""
    idx = np.clip(np.searchsorted(step, np.nan_to_num(when, nan=step[0])), 0, step.size - 1)
    out = np.take_along_axis(x, idx[None], axis=0)[0]
    return np.where(np.isnan(when), 0.0, out)
