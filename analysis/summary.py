"""One pass over a history: laws, stages, predictions, fits and regime, per run.

:func:`analyze` computes everything once; :func:`run_summary` flattens it into one dict
of JSON scalars per run (the row a sweep writes to its CSV). Never-happened times are
``float('nan')``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator import History

from .fits import loss_rate, s21_decay, predict_test_error
from .laws import LAWS, LawReport, check_laws
from .predictions import Predictions, predict
from .quantities import Quantities, quantities, recorded
from .regime import Condition, conditions, in_regime
from .stages import Stages, detect_stages


@dataclass
class Analysis:
    """Everything the report needs, for every run of a history."""

    history: History
    q: Quantities
    laws: LawReport
    stages: Stages
    pred: Predictions
    decay: list[dict]
    rate: list[dict]
    test: list[dict]
    regime: list[list[Condition]]

    @property
    def R(self) -> int:
        return self.q.R


def analyze(history: History, *, tol: float = 1e-9) -> Analysis:
    """Run every check of the package on ``history`` (one run or a batch)."""
    if history["step"].size < 1:
        raise ValueError("history has no recorded steps")
    q = quantities(history)
    st = detect_stages(q)
    return Analysis(history=history, q=q, laws=check_laws(q, tol=tol), stages=st,
                    pred=predict(q), decay=s21_decay(q, st.T2), rate=loss_rate(history, q),
                    test=predict_test_error(history, q),
                    regime=[conditions(history, q, r) for r in range(q.R)])


def _f(x) -> float:
    x = float(x)
    return x if math.isfinite(x) or math.isinf(x) else math.nan


def pair_facts(a: Analysis, r: int) -> dict:
    """Per-run counts about pairs: alignment accuracy, at-risk/stuck, Stage IV flips."""
    st, p, q = a.stages, a.pred, a.q
    risk = st.at_risk[r]
    measured = (st.aligned_sign[r] != 0) & ~risk
    n_pairs = int(measured.sum())
    correct = int((st.aligned_sign[r] == p.aligned_sign[r])[measured].sum())
    accuracy = correct / n_pairs if n_pairs else math.nan
    # Stage III: signal signs where the votes first agree (else at the end)
    k3 = -1 if not np.isfinite(st.T3[r]) else int(np.searchsorted(q.step, st.T3[r]))
    qs, ks = np.sign(q.Qs[k3, r]), np.sign(q.Ks[k3, r])
    majority_ok = int((qs == p.Qs_sign[r]).sum() + (ks == p.Ks_sign[r]).sum())
    # the votes are weighted by |l'_i|, which drift apart as samples are fit at different
    # rates: a neuron's majority can shift after T3 (counted, not hidden)
    shifted = int((np.sign(q.Qs[-1, r]) != qs).sum()) if np.isfinite(st.T3[r]) else 0
    # Stage IV: minority pairs (aligned sign against the neuron's final query signal)
    final_major = np.sign(q.Qs[-1, r])[:, None]                   # (m_k, 1)
    minority = (st.aligned_sign[r] != 0) & (st.aligned_sign[r] != final_major)
    key_flipped = minority & (np.sign(q.Kn[-1, r]) == final_major)
    query_flipped = minority & (np.sign(q.Qn[-1, r]) == final_major)
    neg_to_pos = minority & (st.aligned_sign[r] < 0) & (q.Qn[-1, r] > 0)
    return {
        "pairs": int(risk.size), "aligned_pairs_checked": n_pairs,
        "aligned_sign_correct": correct, "aligned_sign_accuracy": accuracy,
        "at_risk_pairs": int(risk.sum()), "oscillating_pairs": int(st.oscillating[r].sum()),
        "predicted_stuck_pairs": int(p.stuck[r].sum()),
        "stuck_prediction_exact": bool((p.stuck[r] == st.oscillating[r]).all()),
        "majority_signs_correct": majority_ok, "majority_signs": int(2 * qs.size),
        "majority_shifted_after_T3": shifted,
        "minority_pairs": int(minority.sum()),
        "predicted_minority_pairs": int(p.minority[r].sum()),
        "minority_prediction_exact": bool((p.minority[r] == minority).all()),
        "minority_key_flipped": int(key_flipped.sum()),
        "minority_query_flipped": int(query_flipped.sum()),
        "query_noise_negative_to_positive": int(neg_to_pos.sum()),
        "final_key_noise_with_majority": float((np.sign(q.Kn[-1, r]) == final_major).mean()),
        "final_query_noise_with_majority": float((np.sign(q.Qn[-1, r]) == final_major).mean()),
    }


def summarize_run(a: Analysis, r: int) -> dict:
    """The flat summary of run ``r`` (see :func:`run_summary`)."""
    h, st, p = a.history, a.stages, a.pred
    cfg = h.config
    out: dict = {"seed": int(h["seeds"][r]), "optimizer": cfg.optimizer,
                 "steps": int(h["step"][-1]), "record_every": int(cfg.record_every)}
    for name in ("T1", "T2", "T2_all", "T3", "T3_settled", "T4"):
        out[name] = _f(getattr(st, name)[r])
    out["T1_predicted"] = _f(p.T1[r])
    out["T2_predicted"] = _f(p.T2[r])
    out["law_step_pairs"] = a.laws.step_pairs
    for law in LAWS:
        res = a.laws[law]
        out[f"law{law}_checked"] = int(res.checked[r])
        out[f"law{law}_mismatches"] = int(res.mismatches[r])
        out[f"law{law}_excluded"] = int(sum(int(v[r]) for v in res.excluded.values()))
        out[f"law{law}_max_error"] = _f(res.max_error[r])
    out.update(pair_facts(a, r))
    loss, test_loss = h["train_loss"][:, r], h["test_loss"][:, r]
    out.update({
        "initial_train_loss": _f(loss[0]), "final_train_loss": _f(loss[-1]),
        "initial_test_loss": _f(test_loss[0]), "final_test_loss": _f(test_loss[-1]),
        "final_test_error": _f(h["test_error"][-1, r]),
        "predicted_test_error": _f(a.test[r]["predicted"]),
        "predicted_test_error_fresh": _f(a.test[r]["predicted_fresh"]),
        "train_test_margin_ratio": _f(a.test[r]["train_test_margin_ratio"]),
        "train_loss_rate": _f(a.rate[r]["rate"]),
        "predicted_train_loss_rate": _f(a.rate[r]["predicted_rate"]),
        "s21_decay": a.decay[r]["form"],
        "shared_samples": int((a.q.shared[r] > 0).sum()),
        "underflow_samples": int((recorded(h, "underflow_step", -np.ones(a.q.Vn.shape[1:]))[r] >= 0).sum()),
        "in_regime": bool(in_regime(a.regime[r])),
        "regime_failures": ";".join(c.name for c in a.regime[r] if not c.ok),
    })
    return out


SUMMARY_KEYS = ("seed", "T1", "T2", "T3", "T4",
                *(f"law{k}_{w}" for k in LAWS for w in ("checked", "mismatches")),
                "aligned_sign_accuracy", "final_train_loss", "final_test_loss",
                "final_test_error", "train_loss_rate", "s21_decay", "in_regime")
"""Keys every summary has, whatever happened (a sweep's CSV columns rely on them)."""


def run_summary(history: History) -> list[dict]:
    """One flat dict per run of ``history``: stage times, law counts, predictions and
    outcomes, all JSON scalars (float/int/str/bool; ``nan`` for never).

    Never raises on a readable history: if the analysis itself fails, each run still
    gets every key of :data:`SUMMARY_KEYS` (``nan`` / ``"error"``) and the reason in
    ``analysis_error`` (empty string when all went well).
    """
    try:
        a = analyze(history)
        return [{**summarize_run(a, r), "analysis_error": ""} for r in range(a.R)]
    except Exception as exc:  # noqa: BLE001  (a sweep must get a row for every run)
        out = []
        for r, seed in enumerate(np.atleast_1d(history["seeds"])):
            row: dict = {k: math.nan for k in SUMMARY_KEYS}
            row.update({"seed": int(seed), "s21_decay": "error", "in_regime": False,
                        "analysis_error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            for k in LAWS:
                row[f"law{k}_checked"] = 0
                row[f"law{k}_mismatches"] = 0
            out.append(row)
        return out
