"""The report of a run directory: every prediction of the theory next to what the run
measured, with a verdict, as a printable table, ``report.md`` and ``report.json``.

Verdicts: ``agrees``; ``disagrees``; ``outside regime`` (it disagrees, but the run breaks
an assumption the prediction needs, so it is no finding against the theory); ``not
reached`` (the run ended before the stage the prediction is about); ``n/a`` (nothing to
measure, e.g. no consecutive records for the law checks).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator import History
from simulator.io import atomic_write_text

from .laws import LAW_TITLES, LAWS
from .regime import in_regime
from .summary import Analysis, analyze, pair_facts, summarize_run

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
STAGES_PNG = "stages.png"
LOSS_PNG = "loss.png"


@dataclass(frozen=True)
class Row:
    """One line of the report."""

    key: str
    prediction: str
    predicted: str
    measured: str
    verdict: str

    def to_dict(self) -> dict:
        return {"key": self.key, "prediction": self.prediction, "predicted": self.predicted,
                "measured": self.measured, "verdict": self.verdict}


def _t(x: float) -> str:
    return "never" if not np.isfinite(x) else f"{x:g}"


NOT_REACHED = "not reached"


def _verdict(ok: bool | None, regime_ok: bool = True, reached: bool = True) -> str:
    if ok is None:
        return "n/a"
    if not ok and not reached:
        return NOT_REACHED
    if ok:
        return "agrees"
    return "disagrees" if regime_ok else "outside regime"


def rows(a: Analysis, r: int = 0) -> list[Row]:
    """The prediction rows of run ``r``."""
    h, st, p = a.history, a.stages, a.pred
    last = float(h["step"][-1])
    regime_ok = in_regime(a.regime[r])
    test_ok = all(c.ok for c in a.regime[r])
    facts = pair_facts(a, r)
    out: list[Row] = []
    for law in LAWS:
        res = a.laws[law]
        checked, bad = int(res.checked[r]), int(res.mismatches[r])
        ex = {k: int(v[r]) for k, v in res.excluded.items() if v[r]}
        extra = "" if not ex else " (apart: " + ", ".join(f"{v} {k}" for k, v in ex.items()) + ")"
        out.append(Row(f"law{law}", f"law {law}: {LAW_TITLES[law]}",
                       "0 mismatches",
                       f"{bad} mismatches of {checked}{extra}" if bad else f"0 of {checked}{extra}",
                       _verdict(None if checked == 0 else bad == 0, regime_ok)))
    T1p, T1m = p.T1[r], st.T1[r]
    out.append(Row("T1", "T1: every Vn_i > Vs (laws 1-2)", _t(T1p), _t(T1m),
                   _verdict(None if not np.isfinite(T1m) and not np.isfinite(T1p)
                            else bool(T1p == T1m), regime_ok,
                            reached=np.isfinite(T1m) or not T1p <= last)))
    T2p, T2m = p.T2[r], st.T2[r]
    close = np.isfinite(T2p) and np.isfinite(T2m) and abs(T2p - T2m) <= max(2, 0.05 * T2p)
    out.append(Row("T2", "T2: pairs (Qn, Kn) share a sign (at-risk apart)",
                   _t(T2p), _t(T2m) + ("" if st.T2_all[r] == T2m else
                                       f" (all: {_t(st.T2_all[r])})"),
                   _verdict(bool(close), regime_ok, reached=np.isfinite(T2m) or not T2p <= last)))
    acc = facts["aligned_sign_accuracy"]
    out.append(Row("aligned_sign", "aligned sign = sgn(Qn+Kn) at Stage II start",
                   ">= 99% of pairs",
                   f"{100 * acc:.1f}% ({facts['aligned_sign_correct']}/{facts['aligned_pairs_checked']})"
                   if np.isfinite(acc) else "no aligned pairs",
                   _verdict(None if not np.isfinite(acc) else acc >= 0.99, regime_ok)))
    out.append(Row("stuck_pairs", "at-risk pairs |Qn+Kn| < h_i oscillate (period 2)",
                   f"{facts['predicted_stuck_pairs']} of {facts['at_risk_pairs']} at risk",
                   f"{facts['oscillating_pairs']} oscillated",
                   _verdict(None if a.laws.step_pairs == 0 else facts["stuck_prediction_exact"],
                            regime_ok)))
    shift = facts["majority_shifted_after_T3"]
    out.append(Row("majority", "T3: sgn Qs_s, Ks_s = majority votes (closed form)",
                   f"{facts['majority_signs']} signs",
                   f"{facts['majority_signs_correct']} of {facts['majority_signs']} at T3="
                   f"{_t(st.T3[r])}" + (f"; {shift} Qs shift sign later" if shift else ""),
                   _verdict(facts["majority_signs_correct"] == facts["majority_signs"], regime_ok,
                            reached=np.isfinite(st.T3[r]))))
    T3, T4 = st.T3[r], st.T4[r]
    order = bool(T1m < T2m < T4 and T1m < T3 < T4)
    out.append(Row("stage_order", "stage order",
                   "T1 < T2, T3 < T4",
                   f"T1={_t(T1m)} T2={_t(T2m)} T3={_t(T3)} T4={_t(T4)}",
                   _verdict(order, regime_ok,
                            reached=bool(np.isfinite([T1m, T2m, T3, T4]).all()))))
    form = a.decay[r]["form"]
    out.append(Row("s21_decay", "Stage IV: log s_i21 quadratic in t", "quadratic",
                   f"{form} (R2 lin {a.decay[r]['r2_linear']:.3f}, quad {a.decay[r]['r2_quadratic']:.3f})",
                   _verdict(None if form == "undetermined" else form == "quadratic", regime_ok,
                            reached=np.isfinite(T4))))
    n_min = facts["minority_pairs"]
    out.append(Row("minority_flip",
                   "Stage IV: minority pairs flip to sgn(Qs_s)",
                   f"{n_min} keys flip",
                   f"{facts['minority_key_flipped']} keys, {facts['minority_query_flipped']} queries"
                   f" ({facts['query_noise_negative_to_positive']} negative -> positive)",
                   _verdict(None if n_min == 0 else facts["minority_key_flipped"] == n_min,
                            regime_ok, reached=np.isfinite(T4))))
    loss = h["train_loss"][:, r]
    out.append(Row("train_loss", "training loss converges", "< 1e-3 at the end",
                   f"{loss[-1]:.3g}", _verdict(bool(loss[-1] < 1e-3), regime_ok,
                                               reached=np.isfinite(T4))))
    rate = a.rate[r]
    rate_ok = None if not np.isfinite(rate["rate"]) else \
        abs(rate["rate"] - rate["predicted_rate"]) <= 0.25 * abs(rate["predicted_rate"])
    out.append(Row("loss_rate", "loss rate -dlogL/dt, last quarter",
                   f"{rate['predicted_rate']:.3g}/step",
                   f"{rate['rate']:.3g}/step (R2 {rate['r2']:.4f})", _verdict(rate_ok, regime_ok)))
    tl = h["test_loss"][:, r]
    out.append(Row("test_loss", "test loss stays near its start",
                   "change < 0.05", f"{tl[0]:.4f} -> {tl[-1]:.4f}",
                   _verdict(bool(abs(tl[-1] - tl[0]) < 0.05), regime_ok)))
    te = a.test[r]
    ok = abs(te["predicted"] - te["measured"]) <= te["tolerance"]
    out.append(Row("test_error", "test error: Vs vs fresh-noise spread",
                   f"{te['predicted']:.3f} (fresh only {te['predicted_fresh']:.3f})",
                   f"{te['measured']:.3f} ({100 * te['p_hit']:.0f}% hit trained coords; "
                   f"train/test margin {te['train_test_margin_ratio']:.0f}x)",
                   _verdict(bool(ok), regime_ok and test_ok)))
    return out


def _json_safe(x):
    """nan/inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def build_report(history: History) -> dict:
    """The report as a strict-JSON dict: config, regime, per-run rows and summaries."""
    a = analyze(history)
    runs = []
    for r in range(a.R):
        runs.append({
            "seed": int(history["seeds"][r]),
            "in_regime": bool(in_regime(a.regime[r])),
            "regime": [c.to_dict() for c in a.regime[r]],
            "rows": [row.to_dict() for row in rows(a, r)],
            "summary": summarize_run(a, r),
            "first_mismatch": {f"law{law}": a.laws[law].first_mismatch[r] for law in LAWS},
            "excluded": {f"law{law}": {k: int(v[r]) for k, v in a.laws[law].excluded.items()}
                         for law in LAWS},
            # (neuron s, sample i) of pairs reported apart in Stage II
            "at_risk_pairs": np.argwhere(a.stages.at_risk[r]).tolist(),
            "oscillating_pairs": np.argwhere(a.stages.oscillating[r]).tolist(),
            "predicted_stuck_pairs": np.argwhere(a.pred.stuck[r]).tolist(),
        })
    report = {"config": history.config.to_dict(),
              "law_step_pairs": a.laws.step_pairs, "law_gaps": a.laws.gaps,
              "law_tolerance": a.laws.tol, "runs": runs,
              "figures": [STAGES_PNG, LOSS_PNG]}
    return _json_safe(report)


def _notes(report: dict, run: int = 0) -> list[str]:
    """Lines under the table: tolerance, gaps, optimizer, failed regime conditions."""
    cfg = report["config"]
    rr = report["runs"][run]
    notes = [f"laws: a change matches within {report['law_tolerance']:g} of one step; "
             "items breaking the laws' assumptions are counted apart; h_i = eta ||xi_i||_1"]
    if report["law_gaps"]:
        notes.append(f"law checks used {report['law_step_pairs']} consecutive step pairs; "
                     f"{report['law_gaps']} recorded gaps (record_every > 1) were not checked")
    if cfg["optimizer"] != "signgd":
        notes.append(f"optimizer {cfg['optimizer']}: laws 1-6 are SignGD's; the law rows show "
                     "where they fail for this optimizer")
    for c in rr["regime"]:
        if not c["ok"]:
            scope = "outside the theory's regime" if c["affects"] == "dynamics" \
                else "caveat for the test-error prediction"
            val = "n/a" if c["value"] is None else f"{c['value']:.3g}"
            notes.append(f"{scope}: {c['name']} = {val} (needs {c['bound']}): {c['why']}")
    if len(report["runs"]) > 1:
        counts: dict[str, dict[str, int]] = {}
        for run_rep in report["runs"]:
            for row in run_rep["rows"]:
                counts.setdefault(row["key"], {}).setdefault(row["verdict"], 0)
                counts[row["key"]][row["verdict"]] += 1
        notes.append("verdicts over runs: " + "; ".join(
            f"{k}: " + ", ".join(f"{v} {n}" for n, v in c.items()) for k, c in counts.items()))
    return notes


def format_table(report: dict, run: int = 0) -> str:
    """A plain-text table (prediction | predicted | measured | verdict) of one run,
    with the regime conditions that fail and a verdict count over all runs."""
    cfg = report["config"]
    rr = report["runs"][run]
    head = (f"Theory check: {cfg['optimizer']}, d={cfg['d']}, n={cfg['n']}, s={cfg['s']}, "
            f"||mu||={cfg['mu_norm']:g}, sigma_0={cfg['sigma_0']:g}, eta={cfg['eta']:g}, "
            f"steps={cfg['steps']}, seed={rr['seed']}"
            + (f" (run {run + 1} of {len(report['runs'])})" if len(report["runs"]) > 1 else ""))
    cols = [("prediction", "prediction"), ("predicted", "predicted"),
            ("measured", "measured"), ("verdict", "verdict")]
    widths = [max(len(name), *(len(row[key]) for row in rr["rows"])) for key, name in cols]
    widths[0] = min(widths[0], 60)
    widths[1] = min(widths[1], 30)

    def line(vals):
        return "  ".join(v[:w].ljust(w) if i < 2 else v.ljust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    out = [head, line([n for _, n in cols]), line(["-" * w for w in widths])]
    out += [line([row[k] for k, _ in cols]) for row in rr["rows"]]
    notes = _notes(report, run)
    out += ["  note: " + n for n in notes]
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(report: dict) -> str:
    cfg = report["config"]
    lines = ["# Theory check report", "",
             "Each prediction of the SignGD theory (Li et al. 2024; `SETTING.md` sections 5-7) "
             "next to what this run measured. Verdicts: *agrees*, *disagrees*, *outside "
             "regime* (a disagreement where the run breaks an assumption the prediction "
             "needs), *not reached* (the run ended before that stage), *n/a* (nothing to "
             "measure).", "",
             f"Config: `{json.dumps(cfg, sort_keys=True)}`", ""]
    for k, rr in enumerate(report["runs"]):
        lines += [f"## Run seed {rr['seed']}" + ("" if rr["in_regime"] else " (outside regime)"), "",
                  "| prediction | predicted | measured | verdict |", "|---|---|---|---|"]
        lines += [f"| {_cell(r['prediction'])} | {_cell(r['predicted'])} | {_cell(r['measured'])} "
                  f"| **{r['verdict']}** |" for r in rr["rows"]]
        lines += [""] + [f"- {_cell(n)}" for n in _notes(report, k)]
        lines += ["", "Regime conditions:", ""]
        lines += [f"- {'ok' if c['ok'] else 'FAILS'}: {c['name']} = "
                  f"{'n/a' if c['value'] is None else format(c['value'], '.3g')} "
                  f"(needs {c['bound']}; {c['why']})" for c in rr["regime"]]
        lines.append("")
    lines += ["Figures: " + ", ".join(f"[{f}]({f})" for f in report["figures"]), ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike) -> str:
    """Analyze a run directory; write ``report.md``, ``report.json``, ``stages.png`` and
    ``loss.png`` into it; return the printable table."""
    from .figures import save_loss_figure, save_stages_figure

    run_dir = Path(run_dir)
    history = History.load(run_dir)
    report = build_report(history)
    atomic_write_text(run_dir / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False) + "\n")
    atomic_write_text(run_dir / REPORT_MD, _markdown(report))
    save_stages_figure(history, run_dir / STAGES_PNG)
    save_loss_figure(history, run_dir / LOSS_PNG)
    table = format_table(report)
    return table + f"\nwrote {run_dir / REPORT_MD}, {REPORT_JSON}, {STAGES_PNG}, {LOSS_PNG}"


def load_report(run_dir: str | os.PathLike) -> dict:
    """Read ``report.json`` of a run directory."""
    with open(Path(run_dir) / REPORT_JSON, encoding="utf-8") as fh:
        return json.load(fh)
