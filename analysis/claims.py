"""The claims registry: every prediction the report checks, defined once.

A :class:`Claim` holds its title, its bound (as data), when it applies and its check.
The report table, ``report.json`` and the per-run summary columns of a sweep are all
derived from :data:`CLAIMS` and :data:`COLUMNS`; no threshold is written twice.

Verdicts (:data:`VERDICTS`), each with its reason:

================== ================================================================
agrees             the run measured what the claim predicts
disagrees          it did not, inside the theory's regime
not reached        the run ended before the claim could be settled (the reason says
                   what was still under way)
not applicable     the claim has nothing to say about this run: the optimizer is not
                   sign-like (SignGD's closed forms), the record grid skips steps (a
                   one-step law), or nothing is left to check (e.g. every item breaks
                   a law's assumptions)
outside the regime it disagrees, and the run breaks an assumption the claim needs
                   (the failing conditions of :mod:`analysis.regime` are named)
================== ================================================================

The order of the decision: not applicable (optimizer, noise variant, record grid,
nothing to check), then agrees, then not reached, then outside the regime, then
disagrees.

Recording grid. A predicted step ``t`` is compared with the first recorded step at or
after ``t`` (:func:`on_grid`), since that is the first record that can show it; the row
says the grid. Claims that need consecutive steps are not applicable when the grid
skips steps, and their summary columns are NaN, never 0.

>>> from analysis.claims import CLAIMS, columns
>>> [c.key for c in CLAIMS][:3]
['law1', 'law2', 'law3']
>>> columns()["T1"]["unit"]
'step'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from simulator.optimizers import is_sign_like

from .fits import AIC_MARGIN, GROWTH_RULE, MIN_R2
from .laws import LAW_TITLES, LAWS, REASONS
from .predictions import votes_at
from .quantities import recorded
from .regime import failed, in_regime
from .stages import OSCILLATION_FLIPS, S21_THRESHOLD, stage_of, stage_overlaps

if TYPE_CHECKING:  # the analysis pass imports this module, not the other way round
    from .summary import Analysis

AGREES = "agrees"
DISAGREES = "disagrees"
NOT_REACHED = "not reached"
NOT_APPLICABLE = "not applicable"
OUTSIDE = "outside the regime"
VERDICTS = (AGREES, DISAGREES, NOT_REACHED, NOT_APPLICABLE, OUTSIDE)


@dataclass(frozen=True)
class Verdict:
    """One of :data:`VERDICTS` and why (empty for ``agrees``)."""

    kind: str
    reason: str = ""

    def __str__(self) -> str:
        return self.kind + (f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Check:
    """What a claim's check found on one run.

    ``ok``: the comparison (None: nothing to compare). ``why``: what differed.
    ``pending``: non-empty when the run ended before the claim could be settled.
    ``nothing``: non-empty when nothing is left to check (the claim is not applicable).
    """

    predicted: str
    measured: str
    ok: bool | None = None
    why: str = ""
    pending: str = ""
    nothing: str = ""


@dataclass(frozen=True)
class Claim:
    """One prediction of the theory.

    ``bound``: the numbers the check uses (the title is formatted from them).
    ``sign_like``: a SignGD closed form, applicable to sign-like optimizers only.
    ``every_step``: needs consecutive records. ``regime``: the scopes of
    :mod:`analysis.regime` it assumes. ``check``: ``(run, claim) -> Check``.
    """

    key: str
    title: str
    bound: Mapping[str, float]
    check: Callable[["Run", "Claim"], Check]
    sign_like: bool = True
    every_step: bool = False
    regime: tuple[str, ...] = ("dynamics",)

    @property
    def text(self) -> str:
        return self.title.format(**self.bound)


@dataclass(frozen=True)
class Result:
    """A claim, what its check found, and the verdict."""

    claim: Claim
    check: Check
    verdict: Verdict

    def to_dict(self) -> dict:
        return {"key": self.claim.key, "prediction": self.claim.text,
                "predicted": self.check.predicted, "measured": self.check.measured,
                "verdict": self.verdict.kind, "reason": self.verdict.reason}


# ---------------------------------------------------------------------------
# one run of an analysis, with the facts several claims share
# ---------------------------------------------------------------------------

def on_grid(t: float, steps: np.ndarray) -> float:
    """The first recorded step at or after step ``t`` (nan if ``t`` is nan or after the
    last record): the first record that can show an event predicted at ``t``."""
    if not np.isfinite(t):
        return math.nan
    k = int(np.searchsorted(steps, t, side="left"))
    return float(steps[k]) if k < steps.size else math.nan


def grid_text(steps: np.ndarray) -> str:
    """How the records are spaced: ``every step``, ``every 3 steps`` or ``irregular``."""
    gaps = np.unique(np.diff(steps)[:-1]) if steps.size > 2 else np.diff(steps)
    if gaps.size == 0 or (gaps.size == 1 and gaps[0] == 1 and np.all(np.diff(steps) == 1)):
        return "every step"
    if gaps.size == 1:
        return f"every {int(gaps[0])} steps"
    return "irregular"


@dataclass
class Run:
    """Run ``r`` of an :class:`~analysis.summary.Analysis`, as the claims see it."""

    a: "Analysis"
    r: int

    @property
    def config(self):
        return self.a.history.config

    @property
    def steps(self) -> np.ndarray:
        return self.a.q.step

    @property
    def last(self) -> float:
        return float(self.steps[-1])

    @property
    def every_step(self) -> bool:
        return bool(np.all(np.diff(self.steps) == 1))

    @property
    def grid(self) -> str:
        return grid_text(self.steps)

    @property
    def sign_like(self) -> bool:
        return is_sign_like(self.config.optimizer)

    @property
    def conditions(self):
        return self.a.regime[self.r]

    @cached_property
    def facts(self) -> dict:
        return pair_facts(self.a, self.r)

    @cached_property
    def results(self) -> dict[str, Result]:
        return {c.key: judge(c, self) for c in CLAIMS}


def judge(claim: Claim, run: Run) -> Result:
    """Run the claim's check and decide the verdict (module doc)."""
    try:
        chk = claim.check(run, claim)
    except NotAnalysedError as exc:       # a part that does not apply: variant_reason says why
        chk = Check("n/a", "n/a", nothing=str(exc))
    cfg = run.config
    if claim.sign_like and not run.sign_like:
        v = Verdict(NOT_APPLICABLE, f"a SignGD closed form; optimizer {cfg.optimizer} "
                    "is not sign-like")
    elif claim.sign_like and (cfg.noise != "sparse" or cfg.sigma_p == 0):
        v = Verdict(NOT_APPLICABLE, f"a closed form for sparse noise; the noise variant is "
                    f"{cfg.noise!r} with sigma_p = {cfg.sigma_p:g}")
    elif (why := variant_reason(claim, cfg)):
        v = Verdict(NOT_APPLICABLE, why)
    elif claim.every_step and not run.every_step:
        v = Verdict(NOT_APPLICABLE, f"needs every step recorded; records are {run.grid}")
    elif chk.nothing:
        v = Verdict(NOT_APPLICABLE, chk.nothing)
    elif chk.ok:
        v = Verdict(AGREES)
    elif chk.pending:
        v = Verdict(NOT_REACHED, chk.pending)
    elif chk.ok is None:
        v = Verdict(NOT_APPLICABLE, "nothing to compare")
    else:
        bad = failed(run.conditions, claim.regime)
        v = (Verdict(OUTSIDE, "; ".join(f"{c.name} = {c.value:.3g} (needs {c.bound})" for c in bad))
             if bad else Verdict(DISAGREES, chk.why))
    return Result(claim, chk, v)


#: Claims whose check reads only signs of SignGD's step (the laws) or the laws'
#: consequences before the scores matter: a score scale or mean pooling changes
#: magnitudes, not these signs (docs/theory.md section 5).
SCALE_FREE = ("law1", "law2", "law3", "law4", "law5", "law6", "T1", "T2", "aligned_sign",
              "stuck_pairs", "train_loss", "test_loss")


#: Outcome claims, stated for any run (no closed form of the setting behind them).
OUTCOMES = ("train_loss", "test_loss")

#: The laws: :func:`analysis.laws.check_laws` derives them for the configured score
#: scale, pooling, feature noise, mini-batches and number of patches.
LAW_KEYS = tuple(f"law{k}" for k in LAWS)


class NotAnalysedError(LookupError):
    """A part of the analysis was used that does not apply to the run's variant."""


class NotAnalysed:
    """Stands for a part of an :class:`~analysis.summary.Analysis` that does not apply
    to the run's variant (the stage analysis for inputs of more than two patches):
    any use raises :class:`NotAnalysedError` with the reason, which the verdicts and
    the summary turn into *not applicable* and NaN."""

    def __init__(self, reason: str):
        self.reason = reason

    def __getattr__(self, name):
        raise NotAnalysedError(self.reason)

    def __getitem__(self, key):
        raise NotAnalysedError(self.reason)


def analysed(part) -> bool:
    """``part`` of an analysis applies to the run (is not :class:`NotAnalysed`)."""
    return not isinstance(part, NotAnalysed)


#: Claims that hold, or are checked, for any number of patches: the laws, per noise
#: patch (:func:`analysis.laws.check_laws`), the loss rate they give
#: (:func:`analysis.fits.loss_rate`) and the outcomes.
PATCH_FREE = (*LAW_KEYS, "loss_rate", *OUTCOMES)


def patches_reason(cfg) -> str:
    """Why the stage analysis does not apply to inputs of ``n_patches > 2`` patches
    (empty for two)."""
    L = getattr(cfg, "n_patches", 2)
    if L == 2:
        return ""
    return (f"n_patches = {L}: the stages and closed forms are derived for one noise patch "
            f"per sample; laws 1-6 are checked per noise patch")


def variant_reason(claim: Claim, cfg) -> str:
    """Why a model, data or training variant takes ``claim`` out of the theory's
    setting (empty when it does not)."""
    if claim.key in OUTCOMES:
        return ""
    if getattr(cfg, "data", "synthetic") != "synthetic":
        return f"a closed form for the synthetic data; data = {cfg.data!r}"
    if claim.key in LAW_KEYS:        # derived for every variant (analysis.laws.check_laws)
        return ""
    if getattr(cfg, "feature_noise", 0.0):
        return (f"feature noise alpha = {cfg.feature_noise:g} puts a signal term in the noise "
                "patch; the closed forms assume a pure noise patch")
    batch = getattr(cfg, "batch_size", None)
    if batch not in (None, cfg.n):
        return (f"mini-batches of {batch} of {cfg.n} samples: the closed forms are for full "
                "batches (tests/test_laws_exact.py checks the laws on each step's batch)")
    if claim.key not in PATCH_FREE and (why := patches_reason(cfg)):
        return why
    scale, pooling = getattr(cfg, "score_scale", 1.0), getattr(cfg, "pooling", "sum")
    if (scale != 1.0 or pooling != "sum") and claim.key not in SCALE_FREE:
        return (f"score_scale = {scale:g}, pooling = {pooling}: this prediction is derived for "
                "unscaled, summed scores")
    return ""


def results(a: "Analysis", r: int = 0) -> list[Result]:
    """Every claim judged on run ``r``, in registry order."""
    return list(Run(a, r).results.values())


def _t(x: float) -> str:
    return "never" if not np.isfinite(x) else f"{x:g}"


def _n(k: int, noun: str) -> str:
    """``"1 pair"``, ``"3 pairs"``."""
    return f"{k} {noun}" + ("" if k == 1 else "s")


def _f(x) -> float:
    x = float(x)
    return x if math.isfinite(x) or math.isinf(x) else math.nan


def pair_facts(a: "Analysis", r: int) -> dict:
    """Per-run counts about pairs: alignment accuracy, period-2 pairs, majorities,
    Stage IV flips (numbers; NaN where nothing was measured)."""
    st, p, q = a.stages, a.pred, a.q
    risk = st.at_risk[r]
    measured = (st.aligned_sign[r] != 0) & ~risk
    n_pairs = int(measured.sum())
    correct = int((st.aligned_sign[r] == p.aligned_sign[r])[measured].sum())
    # period-2 pairs: checked where the closed form decides (module doc of predictions)
    checked = ~p.near_zero[r] | p.decided[r]
    osc = st.oscillating[r]
    # Stage III: signal signs where they first agree with the votes, against the votes
    # the closed form predicts at that step
    reached3 = bool(np.isfinite(st.T3[r]))
    k3 = int(np.searchsorted(q.step, st.T3[r])) if reached3 else -1
    qs, ks = np.sign(q.Qs[k3, r]), np.sign(q.Ks[k3, r])
    vote_q, vote_k, dec = (x[r] for x in votes_at(q, p, np.full(q.R, float(q.step[k3]))))
    majority_ok = int(((qs == vote_q) & dec).sum() + ((ks == vote_k) & dec).sum())
    # the votes are weighted by |l'_i|, which drift apart as samples are fit at different
    # rates: a neuron's majority can shift after T3 (counted, not hidden)
    shifted = int((np.sign(q.Qs[-1, r]) != qs).sum()) if reached3 else 0
    # Stage IV: minority pairs (aligned sign against the neuron's final query signal)
    final_major = np.sign(q.Qs[-1, r])[:, None]                   # (m_k, 1)
    minority = (st.aligned_sign[r] != 0) & (st.aligned_sign[r] != final_major)
    key_flipped = minority & (np.sign(q.Kn[-1, r]) == final_major)
    query_flipped = minority & (np.sign(q.Qn[-1, r]) == final_major)
    neg_to_pos = minority & (st.aligned_sign[r] < 0) & (q.Qn[-1, r] > 0)
    return {
        "pairs": int(risk.size), "aligned_pairs_checked": n_pairs,
        "aligned_sign_correct": correct,
        "aligned_sign_accuracy": correct / n_pairs if n_pairs else math.nan,
        "at_risk_pairs": int(risk.sum()), "near_zero_pairs": int(p.near_zero[r].sum()),
        "undecided_pairs": int((~checked).sum()),
        "oscillating_pairs": int((osc & checked).sum()),
        "undecided_oscillating_pairs": int((osc & ~checked).sum()),
        "predicted_stuck_pairs": int((p.oscillates[r] & checked).sum()),
        "stuck_prediction_exact": bool(((p.oscillates[r] == osc) | ~checked).all()),
        "majority_signs_correct": majority_ok if reached3 else math.nan,
        "majority_signs": int(2 * dec.sum()),
        "majority_undecided_neurons": int((~dec).sum()),
        "majority_shifted_after_T3": shifted,
        "minority_pairs": int(minority.sum()),
        "predicted_minority_pairs": int(p.minority[r].sum()),
        "minority_prediction_exact": bool((p.minority[r] == minority).all()),
        "minority_key_flipped": int(key_flipped.sum()),
        "minority_query_flipped": int(query_flipped.sum()),
        "query_noise_negative_to_positive": int(neg_to_pos.sum()),
        "final_key_noise_with_majority": float((np.sign(q.Kn[-1, r]) == final_major).mean()),
        "final_query_noise_with_majority": float((np.sign(q.Qn[-1, r]) == final_major).mean()),
        "_minority": minority, "_final_major": final_major,
    }


# ---------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------

def check_law(law: int) -> Callable[[Run, Claim], Check]:
    """Law ``law`` of :mod:`analysis.laws`: at most ``bound["mismatches"]`` checked changes
    differ from the law; items breaking its assumptions are counted apart."""
    def check(run: Run, claim: Claim) -> Check:
        res = run.a.laws[law]
        zero = f"{claim.bound['mismatches']:g} mismatches"
        checked, bad = int(res.checked[run.r]), int(res.mismatches[run.r])
        ex = {k: int(v[run.r]) for k, v in res.excluded.items() if v[run.r]}
        apart = "" if not ex else " (apart: " + ", ".join(f"{v} {k}" for k, v in ex.items()) + ")"
        if run.a.laws.step_pairs == 0:
            return Check(zero, "not checked", nothing="no consecutive records")
        if checked == 0:
            return Check(zero, "0 checked" + apart,
                         nothing="every item breaks the law's assumptions" + apart)
        first = res.first_mismatch[run.r]
        return Check(zero, (f"{bad} mismatches of {checked}" if bad else f"0 of {checked}") + apart,
                     ok=bad <= claim.bound["mismatches"],
                     why="" if first is None else f"first mismatch at step {first[0]}")
    return check


def check_stage_time(name: str) -> Callable[[Run, Claim], Check]:
    """``T1`` or ``T2``: the closed form (:mod:`analysis.predictions`) read on the record
    grid, ``on_grid(T_pred)``, against the detected time, within ``bound["tolerance"]``."""
    def check(run: Run, claim: Claim) -> Check:
        st, p, r = run.a.stages, run.a.pred, run.r
        pred, meas = float(getattr(p, name)[r]), float(getattr(st, name)[r])
        rec = on_grid(pred, run.steps)
        shown = _t(pred)
        if not run.every_step and np.isfinite(rec):
            shown += f" (record {_t(rec)}, {run.grid})"
        measured = _t(meas)
        if name == "T2" and not np.isnan(st.T2_all[r]) and st.T2_all[r] != meas:
            measured += f" (all: {_t(st.T2_all[r])})"
        if not np.isfinite(pred) and not np.isfinite(meas):
            return Check(shown, measured, ok=True)
        if np.isfinite(pred) and pred > run.last and not np.isfinite(meas):
            return Check(shown, measured, ok=False,
                         pending=f"predicted at step {_t(pred)}, after the last step {_t(run.last)}")
        ok = bool(np.isfinite(rec) and np.isfinite(meas)
                  and abs(rec - meas) <= claim.bound["tolerance"])
        return Check(shown, measured, ok=ok,
                     why=f"measured {_t(meas)}, predicted {_t(pred)} (first record {_t(rec)})")
    return check


def check_aligned_sign(run: Run, claim: Claim) -> Check:
    """Pairs not at risk align with the predicted sign ``sign(c)`` (``c`` the pair's sum at
    its Stage II start): at least ``bound["min_fraction"]`` of them."""
    f = run.facts
    acc = f["aligned_sign_accuracy"]
    pred = f">= {100 * claim.bound['min_fraction']:g}% of pairs"
    if not np.isfinite(acc):
        T2 = float(run.a.pred.T2[run.r])
        if np.isfinite(T2) and T2 > run.last:
            return Check(pred, "no aligned pairs", ok=False,
                         pending=f"pairs predicted to align by step {_t(T2)}")
        return Check(pred, "no aligned pairs", nothing="no pair outside the at-risk ones aligned")
    wrong = f["aligned_pairs_checked"] - f["aligned_sign_correct"]
    return Check(pred, f"{100 * acc:.1f}% ({f['aligned_sign_correct']}/{f['aligned_pairs_checked']})",
                 ok=acc >= claim.bound["min_fraction"], why=f"{_n(wrong, 'pair')} aligned with the other sign")


def check_period_two(run: Run, claim: Claim) -> Check:
    """The pairs predicted to change sign at ``bound["flips"]`` consecutive steps are the
    ones seen to, among pairs far from zero or decided (:func:`~analysis.predictions.decided_pairs`)."""
    f, p, r = run.facts, run.a.pred, run.r
    und = f["undecided_pairs"]
    pred = (f"{f['predicted_stuck_pairs']} of {f['near_zero_pairs'] - und} decided near-zero pairs"
            + (f" (+{und} undecided)" if und else ""))
    meas = f"{f['oscillating_pairs']} oscillated" + (
        f" (+{f['undecided_oscillating_pairs']} undecided)" if f["undecided_oscillating_pairs"] else "")
    if f["stuck_prediction_exact"]:
        return Check(pred, meas, ok=True)
    checked = ~p.near_zero[r] | p.decided[r]
    missed = checked & p.oscillates[r] & ~run.a.stages.oscillating[r]
    late = p.oscillation_start[r] + claim.bound["flips"] > run.last
    extra = checked & ~p.oscillates[r] & run.a.stages.oscillating[r]
    if not extra.any() and (late | ~missed).all():
        return Check(pred, meas, ok=False, pending="predicted oscillations start less than "
                     f"{claim.bound['flips']:g} steps before the end")
    return Check(pred, meas, ok=False,
                 why=f"{_n(int(missed.sum()), 'predicted pair')} did not oscillate, "
                     f"{_n(int(extra.sum()), 'unpredicted pair')} did")


def check_majority(run: Run, claim: Claim) -> Check:
    """At the measured ``T3``, ``sgn Qs_s`` and ``sgn Ks_s`` equal the votes of laws 5-6
    predicted at that step (:func:`~analysis.predictions.votes_at`), for every neuron
    whose at-risk pairs cannot turn its vote."""
    f, st, r = run.facts, run.a.stages, run.r
    und = f["majority_undecided_neurons"]
    pred = f"{f['majority_signs']} signs" + (f" ({und} neuron{'s' if und > 1 else ''} undecided)" if und else "")
    if f["majority_signs"] == 0:
        return Check(pred, "-", nothing="every neuron's vote could be turned by at-risk pairs")
    if not np.isfinite(st.T3[r]):
        return Check(pred, "T3 never", ok=False,
                     pending="the signals had not all reached their votes when the run ended")
    shift = f["majority_shifted_after_T3"]
    meas = (f"{f['majority_signs_correct']} of {f['majority_signs']} at T3={_t(st.T3[r])}"
            + (f"; {shift} Qs shift sign later" if shift else ""))
    ok = f["majority_signs_correct"] == f["majority_signs"]
    return Check(pred, meas, ok=ok,
                 why=f"{_n(f['majority_signs'] - f['majority_signs_correct'], 'sign')} differ")


def check_stage_order(run: Run, claim: Claim) -> Check:
    """``T1 < T2 < T4`` and ``T1 < T3 < T4`` (measured)."""
    st, r = run.a.stages, run.r
    T1, T2, T3, T4 = (float(getattr(st, k)[r]) for k in ("T1", "T2", "T3", "T4"))
    meas = f"T1={_t(T1)} T2={_t(T2)} T3={_t(T3)} T4={_t(T4)}"
    if not np.isfinite([T1, T2, T3, T4]).all():
        never = ", ".join(k for k, v in zip(("T1", "T2", "T3", "T4"), (T1, T2, T3, T4))
                          if not np.isfinite(v))
        return Check("T1 < T2, T3 < T4", meas, ok=False, pending=f"{never} not reached")
    ok = T1 < T2 < T4 and T1 < T3 < T4
    return Check("T1 < T2, T3 < T4", meas, ok=ok, why=f"out of order: {stage_overlaps(st, r)}")


def check_s21_decay(run: Run, claim: Claim) -> Check:
    """The pooled fit of the score gaps from ``T2`` on reads quadratic by
    :data:`~analysis.fits.GROWTH_RULE`."""
    fit = run.a.decay[run.r]
    pred = (f"quadratic (dAIC > {claim.bound['aic_margin']:g}, most t^2 > 0, "
            f"R2 >= {claim.bound['min_r2']:g})")
    meas = f"{fit.form} ({fit.describe()})"
    T4 = float(run.a.stages.T4[run.r])
    if fit.form == "undetermined":
        return Check(pred, meas, ok=False, pending="fewer than 5 records after T2")
    return Check(pred, meas, ok=fit.form == "quadratic",
                 pending="" if np.isfinite(T4) else "s_i21 has not collapsed yet (T4 never)",
                 why=f"{fit.form} by the rule: {GROWTH_RULE}")


def check_minority_flip(run: Run, claim: Claim) -> Check:
    """Every minority key noise (aligned sign against its neuron's final ``sgn Qs_s``) ends
    with ``sgn Qs_s``; keys still moving at the end are on their way (not reached)."""
    f, q, r = run.facts, run.a.q, run.r
    n_min = f["minority_pairs"]
    pred = f"{n_min} keys flip"
    meas = (f"{f['minority_key_flipped']} keys, {f['minority_query_flipped']} queries"
            f" ({f['query_noise_negative_to_positive']} negative -> positive)")
    if n_min == 0:
        return Check(pred, meas, nothing="no pair is in its neuron's minority")
    if f["minority_key_flipped"] == n_min:
        return Check(pred, meas, ok=True)
    # unflipped minority keys: law 4 turns a key toward sgn Qs_s once
    # s_i11 s_i12 |Qs_s| > s_i21 s_i22 |Qn_si|, and s_i21 keeps collapsing, so a key still
    # moving at the end is on its way; one that stopped (l'_i or the softmax product
    # underflowed, docs/theory.md section 8) never gets there
    major = f["_final_major"]                                     # (m_k, 1)
    left = f["_minority"] & (np.sign(q.Kn[-1, r]) != major)       # (m_k, n)
    moving = np.diff(q.Kn[-2:, r], axis=0)[0] != 0 if q.step.size > 1 else np.ones_like(left)
    toward = moving & (np.sign(q.key_drive[-1, r]) == major)
    stopped = left & ~moving
    if stopped.any():
        return Check(pred, meas, ok=False,
                     why=f"{_n(int(stopped.sum()), 'minority key')} stopped before flipping")
    h = q.noise_step[r][None, :]
    cross = run.last + float(np.ceil(np.abs(q.Kn[-1, r]) / h)[left & toward].max(initial=0))
    n_toward = int((left & toward).sum())
    return Check(pred, meas, ok=False, pending=(
        f"{int(left.sum())} of {n_min} minority keys still moving at the end, {n_toward} "
        "toward sgn(Qs_s)" + (f" (at h_i per step they cross zero by step {cross:.0f})"
                              if n_toward else "")))


def check_train_loss(run: Run, claim: Claim) -> Check:
    """``L`` ends below ``bound["below"]``; if not and it is still falling at the fitted rate
    ``k``, it gets there near ``t_end + ln(L_end / below) / k`` (not reached)."""
    loss = run.a.history["train_loss"][:, run.r]
    below = claim.bound["below"]
    pred, meas = f"< {below:g} at the end", f"{loss[-1]:.3g}"
    if loss[-1] < below:
        return Check(pred, meas, ok=True)
    rate = run.a.rate[run.r]["rate"]
    if np.isfinite(rate) and rate > 0:
        reach = run.last + math.log(loss[-1] / below) / rate
        return Check(pred, meas, ok=False, pending=(
            f"falling at {rate:.3g}/step (last quarter); reaches {below:g} near step {reach:.0f}"))
    return Check(pred, meas, ok=False, why="the training loss is not falling")


def check_loss_rate(run: Run, claim: Claim) -> Check:
    """The fitted ``-d log L / dt`` is within ``bound["rel_tol"]`` of the laws-1-2 rate."""
    rate = run.a.rate[run.r]
    pred = f"{rate['predicted_rate']:.3g}/step"
    if not np.isfinite(rate["rate"]):
        return Check(pred, "no fit", nothing="fewer than 3 positive losses in the last quarter")
    tol = claim.bound["rel_tol"]
    ok = abs(rate["rate"] - rate["predicted_rate"]) <= tol * abs(rate["predicted_rate"])
    return Check(pred, f"{rate['rate']:.3g}/step (R2 {rate['r2']:.4f})", ok=bool(ok),
                 why=f"off by more than {100 * tol:g}%")


def check_test_loss(run: Run, claim: Claim) -> Check:
    """The test loss changes by less than ``bound["max_change"]`` over the run."""
    tl = run.a.history["test_loss"][:, run.r]
    change = claim.bound["max_change"]
    return Check(f"change < {change:g}", f"{tl[0]:.4f} -> {tl[-1]:.4f}",
                 ok=bool(abs(tl[-1] - tl[0]) < change), why=f"changed by {tl[-1] - tl[0]:+.3f}")


def check_test_error(run: Run, claim: Claim) -> Check:
    """The measured test error is within ``bound["sigmas"]`` binomial standard deviations
    of :func:`~analysis.fits.predict_test_error`'s."""
    te = run.a.test[run.r]
    tol = claim.bound["sigmas"] * te["binomial_sd"]
    ok = abs(te["predicted"] - te["measured"]) <= tol
    return Check(f"{te['predicted']:.3f} (fresh only {te['predicted_fresh']:.3f})",
                 f"{te['measured']:.3f} ({100 * te['p_hit']:.0f}% hit trained coords; "
                 f"train/test margin {te['train_test_margin_ratio']:.0f}x)", ok=bool(ok),
                 why=f"more than {claim.bound['sigmas']:g} binomial sd ({tol:.3f}) apart")


CLAIMS: tuple[Claim, ...] = (
    *(Claim(f"law{k}", f"law {k}: {LAW_TITLES[k]}", {"mismatches": 0}, check_law(k),
            every_step=True) for k in LAWS),
    Claim("T1", "T1: every Vn_i > Vs (laws 1-2)", {"tolerance": 0}, check_stage_time("T1")),
    Claim("T2", "T2: pairs (Qn, Kn) share a sign (at-risk apart)", {"tolerance": 0},
          check_stage_time("T2")),
    Claim("aligned_sign", "aligned sign = sgn(Qn+Kn) at Stage II start", {"min_fraction": 0.99},
          check_aligned_sign),
    Claim("stuck_pairs", "pairs near zero oscillate (period 2) as predicted",
          {"flips": OSCILLATION_FLIPS}, check_period_two, every_step=True),
    Claim("majority", "T3: sgn Qs_s, Ks_s = majority votes (closed form)", {}, check_majority,
          regime=("dynamics", "stage III")),
    Claim("stage_order", "stage order", {}, check_stage_order),
    Claim("s21_decay", "Stage IV: log s_i21 quadratic in t", {"aic_margin": AIC_MARGIN, "min_r2": MIN_R2},
          check_s21_decay),
    Claim("minority_flip", "Stage IV: minority pairs flip to sgn(Qs_s)", {}, check_minority_flip),
    Claim("train_loss", "training loss converges", {"below": 1e-3}, check_train_loss,
          sign_like=False),
    Claim("loss_rate", "loss rate -dlogL/dt, last quarter", {"rel_tol": 0.25}, check_loss_rate),
    Claim("test_loss", "test loss stays near its start", {"max_change": 0.05}, check_test_loss),
    Claim("test_error", "test error: Vs vs fresh-noise spread", {"sigmas": 3.0}, check_test_error,
          sign_like=False, regime=("dynamics", "test")),
)
"""Every claim the report checks, in report order."""

CLAIM_KEYS = tuple(c.key for c in CLAIMS)


def claim(key: str) -> Claim:
    """The claim named ``key``."""
    for c in CLAIMS:
        if c.key == key:
            return c
    raise KeyError(f"no claim {key!r}; claims: {', '.join(CLAIM_KEYS)}")


# ---------------------------------------------------------------------------
# the column dictionary: every summary (and sweep) column, its meaning and unit
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """A summary column: ``get(run)`` gives its value (None: written by the sweep)."""

    name: str
    meaning: str
    unit: str
    get: Callable[[Run], Any] | None = field(default=None, compare=False)


def _nan_unless(cond: Callable[[Run], bool], get: Callable[[Run], Any]) -> Callable[[Run], Any]:
    return lambda run: get(run) if cond(run) else math.nan


def _sign_like(run: Run) -> bool:
    return run.sign_like


def _law_checked(law: int) -> Callable[[Run], bool]:
    return lambda run: run.every_step and int(run.a.laws[law].checked[run.r]) > 0


def _fact(name: str, meaning: str, unit: str, when=None) -> Column:
    get = (lambda run: run.facts[name])
    return Column(name, meaning, unit, get if when is None else _nan_unless(when, get))


def _stage_time(name: str, meaning: str) -> Column:
    return Column(name, meaning, "step", lambda run: _f(getattr(run.a.stages, name)[run.r]))


def _predicted(name: str) -> tuple[Column, Column]:
    return (Column(f"{name}_predicted", f"closed-form {name} from the initial state (NaN when "
                   "the optimizer is not sign-like or it never happens)", "step",
                   _nan_unless(_sign_like, lambda run: _f(getattr(run.a.pred, name)[run.r]))),
            Column(f"{name}_predicted_recorded", f"first recorded step at or after "
                   f"{name}_predicted (what {name} is compared with)", "step",
                   _nan_unless(_sign_like, lambda run: on_grid(
                       float(getattr(run.a.pred, name)[run.r]), run.steps))))


def _verdict_column(c: Claim) -> Column:
    return Column(f"{c.key}_verdict", f"verdict on '{c.text}' ({', '.join(VERDICTS)})",
                  "verdict", lambda run: run.results[c.key].verdict.kind)


def _summary_columns() -> tuple[Column, ...]:
    cfg = lambda run: run.config                                  # noqa: E731
    hist = lambda name, k: (lambda run: _f(run.a.history[name][k, run.r]))   # noqa: E731
    laws = []
    for k in LAWS:
        ok = _law_checked(k)
        laws += [
            Column(f"law{k}_checked", f"items law {k} was checked on (NaN: not checked)", "count",
                   _nan_unless(ok, lambda run, k=k: int(run.a.laws[k].checked[run.r]))),
            Column(f"law{k}_mismatches", f"checked items breaking law {k} (NaN: not checked)",
                   "count", _nan_unless(ok, lambda run, k=k: int(run.a.laws[k].mismatches[run.r]))),
            Column(f"law{k}_excluded", f"items set apart ({', '.join(REASONS.values())}); "
                   "NaN: not checked", "count",
                   _nan_unless(ok, lambda run, k=k: int(sum(int(v[run.r]) for v in
                                                            run.a.laws[k].excluded.values())))),
            Column(f"law{k}_max_error", f"largest |observed - law {k}| over checked items",
                   "steps of the law", _nan_unless(ok, lambda run, k=k: _f(
                       run.a.laws[k].max_error[run.r]))),
        ]
    every = lambda run: run.every_step                            # noqa: E731
    return (
        Column("seed", "seed of the run", "-", lambda run: int(run.a.history["seeds"][run.r])),
        Column("optimizer", "configured optimizer", "-", lambda run: cfg(run).optimizer),
        Column("steps", "last training step", "step", lambda run: int(run.last)),
        Column("record_every", "configured record spacing", "step",
               lambda run: int(cfg(run).record_every)),
        _stage_time("T1", "first record from which every Vn_i > Vs"),
        _stage_time("T2", "first record at which every pair not at risk shares a sign"),
        _stage_time("T2_all", "first record at which every pair shares a sign"),
        _stage_time("T3", "first record after T1 at which every sgn Qs_s, Ks_s equals its vote"),
        _stage_time("T3_settled", "first record from which the votes agree until the end"),
        _stage_time("T4", f"first record from which every s_i21 < {100 * S21_THRESHOLD:g}% "
                    "of its start"),
        *_predicted("T1"), *_predicted("T2"),
        Column("stage_at_end", "stage of the last step (1-4; analysis.stages.stage_of)", "stage",
               lambda run: int(stage_of(run.a.stages, run.steps[-1:])[0, run.r])),
        Column("stage_overlaps", "stage times before an earlier stage's, e.g. 'T4<T3' "
               "(empty: in order)", "-", lambda run: stage_overlaps(run.a.stages, run.r)),
        Column("law_step_pairs", "consecutive record pairs (t, t+1) the laws were checked on",
               "count", lambda run: int(run.a.laws.step_pairs)),
        *laws,
        _fact("pairs", "query/key noise pairs (m_k n)", "count"),
        _fact("aligned_pairs_checked", "pairs not at risk that aligned", "count"),
        _fact("aligned_sign_correct", "of those, aligned with the predicted sign", "count"),
        _fact("aligned_sign_accuracy", "aligned_sign_correct / aligned_pairs_checked "
              "(NaN: none)", "fraction"),
        _fact("at_risk_pairs", "pairs with |Qn+Kn| < h_i + rho_i|Qs_s| + |Ks_s| at their "
              "Stage II start (measured)", "count"),
        _fact("near_zero_pairs", "pairs predicted to bring both members within a step of "
              "zero (the only ones that can oscillate)", "count"),
        _fact("undecided_pairs", "near-zero pairs the signals can decide (not checked)", "count"),
        _fact("predicted_stuck_pairs", "checked pairs predicted to oscillate with period 2",
              "count"),
        _fact("oscillating_pairs", "checked pairs seen to oscillate with period 2 (NaN: "
              "records skip steps)", "count", when=every),
        _fact("undecided_oscillating_pairs", "undecided pairs seen to oscillate (NaN: records "
              "skip steps)", "count", when=every),
        _fact("stuck_prediction_exact", "predicted and seen period-2 pairs coincide (NaN: "
              "records skip steps)", "bool", when=every),
        _fact("majority_signs", "query/key signal signs with a decided majority (2 per "
              "decided neuron)", "count"),
        _fact("majority_signs_correct", "of those, equal to the votes predicted at T3 "
              "(NaN: T3 never)", "count"),
        _fact("majority_undecided_neurons", "neurons whose at-risk pairs could turn the vote",
              "count"),
        _fact("majority_shifted_after_T3", "query signals whose sign changes after T3", "count"),
        _fact("minority_pairs", "aligned pairs against their neuron's final sgn Qs_s", "count"),
        _fact("predicted_minority_pairs", "pairs predicted to be in the minority", "count"),
        _fact("minority_prediction_exact", "predicted and measured minority pairs coincide",
              "bool"),
        _fact("minority_key_flipped", "minority key noises ending with sgn Qs_s", "count"),
        _fact("minority_query_flipped", "minority query noises ending with sgn Qs_s", "count"),
        _fact("query_noise_negative_to_positive", "minority query noises aligned negative "
              "that end positive", "count"),
        _fact("final_key_noise_with_majority", "key noises with their neuron's sgn Qs_s at "
              "the end", "fraction"),
        _fact("final_query_noise_with_majority", "query noises with their neuron's sgn Qs_s "
              "at the end", "fraction"),
        Column("initial_train_loss", "training loss at step 0", "nats", hist("train_loss", 0)),
        Column("final_train_loss", "training loss at the last step", "nats", hist("train_loss", -1)),
        Column("initial_test_loss", "test loss at step 0", "nats", hist("test_loss", 0)),
        Column("final_test_loss", "test loss at the last step", "nats", hist("test_loss", -1)),
        Column("final_test_error", "test error at the last step", "fraction",
               hist("test_error", -1)),
        Column("predicted_test_error", "Vs vs fresh-noise spread, with test inputs on trained "
               "coordinates at 1/2", "fraction", lambda run: _f(run.a.test[run.r]["predicted"])),
        Column("predicted_test_error_fresh", "the same with fresh test noise only", "fraction",
               lambda run: _f(run.a.test[run.r]["predicted_fresh"])),
        Column("train_test_margin_ratio", "mean train margin / mean test margin at the end",
               "ratio", lambda run: _f(run.a.test[run.r]["train_test_margin_ratio"])),
        Column("train_loss_rate", "fitted -d log L / dt over the last quarter", "1/step",
               lambda run: _f(run.a.rate[run.r]["rate"])),
        Column("predicted_train_loss_rate", "-d log L / dt from laws 1-2 over the last quarter "
               "(NaN when the optimizer is not sign-like)", "1/step",
               _nan_unless(_sign_like, lambda run: _f(run.a.rate[run.r]["predicted_rate"]))),
        Column("s21_decay", "form of log(s_i22/s_i21) in t from T2 on: linear, quadratic, "
               "other or undetermined (" + GROWTH_RULE + ")", "-",
               lambda run: run.a.decay[run.r].form),
        Column("s21_decay_r2_linear", "pooled R^2 of the per-sample lines", "fraction",
               lambda run: _f(run.a.decay[run.r].r2_linear)),
        Column("s21_decay_r2_quadratic", "pooled R^2 of the per-sample parabolas", "fraction",
               lambda run: _f(run.a.decay[run.r].r2_quadratic)),
        Column("s21_decay_delta_aic", "AIC(line) - AIC(parabola), pooled", "nats",
               lambda run: _f(run.a.decay[run.r].delta_aic)),
        Column("shared_samples", "training samples sharing noise coordinates", "count",
               lambda run: int((run.a.q.shared[run.r] > 0).sum())),
        Column("underflow_samples", "training samples whose l' underflowed to 0", "count",
               lambda run: int((recorded(run.a.history, "underflow_step",
                                         -np.ones(run.a.q.Vn.shape[1:]))[run.r] >= 0).sum())),
        Column("in_regime", "every regime condition on the dynamics holds", "bool",
               lambda run: bool(in_regime(run.conditions))),
        Column("regime_failures", "names of the failing regime conditions (;-joined)", "-",
               lambda run: ";".join(c.name for c in run.conditions if not c.ok)),
        *(_verdict_column(c) for c in CLAIMS),
    )


COLUMNS: tuple[Column, ...] = _summary_columns()
"""The columns of :func:`summary_row` (a run's summary), in order."""

ANALYSIS_ERROR = Column("analysis_error", "why the analysis failed (empty: it did not)", "-")

SWEEP_COLUMNS: tuple[Column, ...] = (
    Column("point", "hash of the sweep point's full config", "-"),
    Column("label", "the --optimizers entry of the point", "-"),
    Column("<config field>", "every field of simulator.SimulationConfig but seed, with "
           "its configured value", "as configured"),
    Column("matched_step", "first recorded step with training loss <= --match-train-loss "
           "(NaN: never)", "step"),
    Column("matched_train_loss", "training loss at matched_step", "nats"),
    Column("matched_test_loss", "test loss at matched_step", "nats"),
    Column("matched_test_error", "test error at matched_step", "fraction"),
    Column("point_seconds", "wall time of the point (machine-dependent)", "s"),
)
"""Columns a sweep adds around each run's summary (written by the sweep, not here)."""


def summary_row(a: "Analysis", r: int) -> dict:
    """The summary of run ``r``: every column of :data:`COLUMNS`, JSON scalars."""
    run = Run(a, r)
    return {c.name: _value(c, run) for c in COLUMNS}


def _value(column: Column, run: Run):
    """A column's value; NaN where it needs a part of the analysis that does not apply."""
    try:
        return column.get(run)
    except NotAnalysedError:
        return math.nan


def columns() -> dict[str, dict[str, str]]:
    """The column dictionary: ``name -> {"meaning", "unit", "source"}`` for every column
    of a run summary (``source = "summary"``) and of a sweep's ``results.csv``
    (``source = "sweep"``), in CSV order."""
    out: dict[str, dict[str, str]] = {}
    for c in SWEEP_COLUMNS[:3]:
        out[c.name] = {"meaning": c.meaning, "unit": c.unit, "source": "sweep"}
    for c in (*COLUMNS, ANALYSIS_ERROR):
        out[c.name] = {"meaning": c.meaning, "unit": c.unit, "source": "summary"}
    for c in SWEEP_COLUMNS[3:]:
        out[c.name] = {"meaning": c.meaning, "unit": c.unit, "source": "sweep"}
    return out


def columns_markdown() -> str:
    """The column dictionary as a Markdown table (the body of ``docs/columns.md``)."""
    lines = ["| column | meaning | unit | source |", "|---|---|---|---|"]
    for name, c in columns().items():
        lines.append(f"| `{name}` | {c['meaning'].replace('|', '/')} | {c['unit']} | {c['source']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# batches of runs
# ---------------------------------------------------------------------------

def aggregate(runs: list[dict]) -> dict[str, dict]:
    """Per claim over the runs of a report (each ``{"seed", "rows"}``): how many agree,
    the count of each verdict, and the seeds that do not agree (with verdict and reason)."""
    out: dict[str, dict] = {}
    for run in runs:
        for row in run["rows"]:
            agg = out.setdefault(row["key"], {"runs": 0, "agrees": 0, "verdicts": {},
                                              "not_agreeing": []})
            agg["runs"] += 1
            agg["verdicts"][row["verdict"]] = agg["verdicts"].get(row["verdict"], 0) + 1
            if row["verdict"] == AGREES:
                agg["agrees"] += 1
            else:
                agg["not_agreeing"].append({"seed": run["seed"], "verdict": row["verdict"],
                                            "reason": row["reason"]})
    return out
