"""One pass over a history: laws, stages, predictions, fits and regime, per run.

:func:`analyze` computes everything once; :func:`run_summary` flattens it into one dict
of JSON scalars per run (the row a sweep writes to its CSV), with the columns of the
claims registry (:mod:`analysis.claims`). Never-happened times and anything not
checked are ``float('nan')``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator import History

from .claims import COLUMNS, NotAnalysed, patches_reason, summary_row
from .fits import GrowthFit, loss_rate, predict_test_error, s21_decay
from .laws import LawReport, check_laws
from .predictions import Predictions, predict
from .quantities import Quantities, quantities
from .regime import Condition, conditions
from .stages import Stages, detect_stages


@dataclass
class Analysis:
    """Everything the report needs, for every run of a history."""

    history: History
    q: Quantities
    laws: LawReport
    stages: Stages
    pred: Predictions
    decay: list[GrowthFit]
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
    if (why := patches_reason(history.config)):
        # more than two patches: the laws per noise patch, the loss rate and the regime;
        # the stage analysis is for one noise patch (its parts say so when used)
        missing = NotAnalysed(why)
        return Analysis(history=history, q=q, laws=check_laws(q, tol=tol), stages=missing,
                        pred=missing, decay=missing, rate=loss_rate(history, q),
                        test=missing, regime=[conditions(history, q, r) for r in range(q.R)])
    st = detect_stages(q)
    return Analysis(history=history, q=q, laws=check_laws(q, tol=tol), stages=st,
                    pred=predict(q), decay=s21_decay(q, st.T2), rate=loss_rate(history, q),
                    test=predict_test_error(history, q),
                    regime=[conditions(history, q, r, st) for r in range(q.R)])


def summarize_run(a: Analysis, r: int) -> dict:
    """The flat summary of run ``r``: the columns of :data:`analysis.claims.COLUMNS`
    (see :func:`run_summary`)."""
    return summary_row(a, r)


SUMMARY_KEYS = tuple(c.name for c in COLUMNS)
"""Keys every summary has, whatever happened (a sweep's CSV columns rely on them)."""


def run_summary(history: History) -> list[dict]:
    """One flat dict per run of ``history``: stage times, law counts, predictions,
    verdicts and outcomes, all JSON scalars (float/int/str/bool; ``nan`` for never and
    for anything not checked). ``analysis.claims.columns()`` says what each key means.

    Never raises on a readable history: if the analysis itself fails, each run still
    gets every key (``nan``, verdicts ``"error"``) and the reason in ``analysis_error``
    (empty string when all went well).
    """
    try:
        a = analyze(history)
        return [{**summarize_run(a, r), "analysis_error": ""} for r in range(a.R)]
    except Exception as exc:  # noqa: BLE001  (a sweep must get a row for every run)
        out = []
        for seed in np.atleast_1d(history["seeds"]):
            row: dict = {k: math.nan for k in SUMMARY_KEYS}
            row.update({k: "error" for k in row if k.endswith("_verdict") or k == "s21_decay"})
            row.update({"seed": int(seed), "in_regime": False,
                        "analysis_error": f"{type(exc).__name__}: {exc}".splitlines()[0]})
            out.append(row)
        return out
