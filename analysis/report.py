"""The report of a run directory: every claim of the theory next to what the run
measured, with a verdict and its reason, as a printable table, ``report.md`` and
``report.json``. The rows come from the claims registry (:mod:`analysis.claims`), which
also defines the verdicts: *agrees*, *disagrees*, *not reached*, *not applicable*,
*outside the regime*. A batch of runs (seeds) is reported run by run and aggregated:
for each claim, how many runs agree and which seeds do not.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from simulator import History
from simulator.io import atomic_write_with
from simulator.optimizers import is_sign_like

from .claims import VERDICTS, aggregate, analysed, grid_text, results
from .fits import GROWTH_RULE
from .laws import LAWS
from .regime import in_regime
from .stages import stage_intervals
from .summary import analyze, summarize_run

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
STAGES_PNG = "stages.png"
PATCHES_PNG = "patches.png"
LOSS_PNG = "loss.png"


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
    """The report as a strict-JSON dict: config, regime, per-run rows (with verdicts and
    reasons) and summaries, and the verdicts aggregated over runs."""
    a = analyze(history)
    last = int(a.q.step[-1])
    runs = []
    for r in range(a.R):
        runs.append({
            "seed": int(history["seeds"][r]),
            "in_regime": bool(in_regime(a.regime[r])),
            "regime": [c.to_dict() for c in a.regime[r]],
            "rows": [res.to_dict() for res in results(a, r)],
            "summary": summarize_run(a, r),
            "stage_intervals": stage_intervals(a.stages, last, r) if analysed(a.stages) else [],
            "first_mismatch": {f"law{law}": a.laws[law].first_mismatch[r] for law in LAWS},
            "excluded": {f"law{law}": {k: int(v[r]) for k, v in a.laws[law].excluded.items()}
                         for law in LAWS},
            **(_pairs(a, r) if analysed(a.stages) else {}),
        })
    report = {"config": history.config.to_dict(), "records": grid_text(a.q.step),
              "law_step_pairs": a.laws.step_pairs, "law_gaps": a.laws.gaps,
              "law_tolerance": a.laws.tol, "growth_rule": GROWTH_RULE, "runs": runs,
              "aggregate": aggregate(runs), "figures": figure_names(history)}
    return _json_safe(report)


def _pairs(a, r: int) -> dict:
    """(neuron s, sample i) of the pairs reported apart in Stage II."""
    return {"at_risk_pairs": np.argwhere(a.stages.at_risk[r]).tolist(),
            "oscillating_pairs": np.argwhere(a.stages.oscillating[r]).tolist(),
            "predicted_stuck_pairs": np.argwhere(a.pred.oscillates[r]).tolist(),
            "undecided_pairs": np.argwhere(a.pred.near_zero[r] & ~a.pred.decided[r]).tolist()}


SCOPES = {"dynamics": "outside the theory's regime",
          "stage III": "caveat for the majority votes", "test": "caveat for the test-error prediction"}
"""How the notes name a failing regime condition, by what it affects."""


def _notes(report: dict, run: int = 0) -> list[str]:
    """Lines under the table: tolerance, grid, optimizer, failed regime conditions."""
    cfg = report["config"]
    rr = report["runs"][run]
    notes = [f"laws: a change matches within {report['law_tolerance']:g} of one step; "
             "items breaking the laws' assumptions are counted apart; h_i = eta ||xi_i||_1"]
    if cfg.get("n_patches", 2) > 2:
        notes.append(f"{cfg['n_patches']} patches: laws 2-4 hold per noise patch (i, j), with "
                     "h_ij = eta ||xi_ij||_1, and laws 3-6 take their L-patch form: the sign of "
                     "sum_k A_lk K_k and sum_l A_lk Q_l, A_lk = s_lk sum_k' s_lk' (u_k - u_k') "
                     "(analysis.laws.drives); the two-patch titles above are their L = 2 case")
    if cfg.get("feature_noise"):
        notes.append(f"feature noise alpha = {cfg['feature_noise']:g}: the laws take the noise "
                     "patch's projections (Vn - alpha Vs, Qn - alpha Qs, Kn - alpha Ks) inside the "
                     "signs, and laws 1, 5, 6 subtract alpha times the noise patches' votes "
                     "(docs/theory.md section 5)")
    if cfg.get("batch_size") not in (None, cfg["n"]):
        notes.append(f"mini-batches of {cfg['batch_size']}: laws 2-4 hold for the samples of "
                     "each step's batch, the others do not move, and laws 1, 5, 6 vote over the batch")
    if report["records"] != "every step":
        notes.append(f"records are {report['records']}: a predicted step is compared with the "
                     "first record at or after it; claims needing every step are not applicable")
    elif report["law_gaps"]:
        notes.append(f"law checks used {report['law_step_pairs']} consecutive step pairs; "
                     f"{report['law_gaps']} recorded gaps were not checked")
    if not is_sign_like(cfg["optimizer"]):
        notes.append(f"optimizer {cfg['optimizer']} is not sign-like: laws 1-6 and the stage "
                     "closed forms are SignGD's and are not applied to it")
    elif cfg["optimizer"] != "signgd":
        notes.append(f"optimizer {cfg['optimizer']} is sign-like: SignGD's laws and closed forms "
                     "are checked against it, though they are exact for SignGD only")
    for c in rr["regime"]:
        if not c["ok"]:
            scope = SCOPES.get(c["affects"], f"caveat for {c['affects']}")
            val = "n/a" if c["value"] is None else f"{c['value']:.3g}"
            notes.append(f"{scope}: {c['name']} = {val} (needs {c['bound']}): {c['why']}")
    return notes


def _aggregate_lines(report: dict) -> list[str]:
    """One line per claim: runs agreeing, and the seeds that do not (with verdicts)."""
    runs = report["runs"]
    seeds = [r["seed"] for r in runs]
    out = [f"over {len(runs)} runs (seeds {seeds[0]}..{seeds[-1]}):"]
    for key, agg in report["aggregate"].items():
        others = "; ".join(f"seed {o['seed']} {o['verdict']}" for o in agg["not_agreeing"])
        out.append(f"  {key}: {agg['agrees']} of {agg['runs']} agree"
                   + (f" (not: {others})" if others else ""))
    return out


COLUMNS = (("prediction", "prediction"), ("predicted", "predicted"),
           ("measured", "measured"), ("verdict", "verdict"), ("reason", "why"))


def format_table(report: dict, run: int = 0) -> str:
    """A plain-text table (prediction | predicted | measured | verdict | why) of one run,
    with the regime conditions that fail and, for a batch, the verdicts over all runs."""
    cfg = report["config"]
    rr = report["runs"][run]
    head = (f"Theory check: {cfg['optimizer']}, d={cfg['d']}, n={cfg['n']}, s={cfg['s']}, "
            f"||mu||={cfg['mu_norm']:g}, sigma_0={cfg['sigma_0']:g}, eta={cfg['eta']:g}, "
            f"steps={cfg['steps']}, seed={rr['seed']}"
            + (f" (run {run + 1} of {len(report['runs'])})" if len(report["runs"]) > 1 else ""))
    widths = [max(len(name), *(len(row[key]) for row in rr["rows"])) for key, name in COLUMNS]
    widths[0] = min(widths[0], 60)

    def line(vals):
        return "  ".join(v[:w].ljust(w) if i < 2 else v.ljust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    out = [head, line([n for _, n in COLUMNS]), line(["-" * w for w in widths])]
    out += [line([row[k] for k, _ in COLUMNS]) for row in rr["rows"]]
    out += ["  note: " + n for n in _notes(report, run)]
    if len(report["runs"]) > 1:
        out += _aggregate_lines(report)
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(report: dict) -> str:
    cfg = report["config"]
    lines = ["# Theory check report", "",
             "Each prediction of the SignGD theory (Li et al. 2024; `docs/theory.md` sections 5-7) "
             "next to what this run measured. Verdicts: " + ", ".join(f"*{v}*" for v in VERDICTS)
             + "; every verdict but *agrees* says why (`analysis.claims`).", "",
             f"Config: `{json.dumps(cfg, sort_keys=True)}`", ""]
    if len(report["runs"]) > 1:
        lines += ["## Over all runs", "", "| claim | agree | not agreeing |", "|---|---|---|"]
        for key, agg in report["aggregate"].items():
            others = "; ".join(f"seed {o['seed']}: {o['verdict']}" for o in agg["not_agreeing"])
            lines.append(f"| {key} | {agg['agrees']} of {agg['runs']} | {_cell(others)} |")
        lines.append("")
    for k, rr in enumerate(report["runs"]):
        lines += [f"## Run seed {rr['seed']}" + ("" if rr["in_regime"] else " (outside regime)"), "",
                  "| prediction | predicted | measured | verdict | why |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(r['prediction'])} | {_cell(r['predicted'])} | {_cell(r['measured'])} "
                  f"| **{r['verdict']}** | {_cell(r['reason'])} |" for r in rr["rows"]]
        lines += [""] + [f"- {_cell(n)}" for n in _notes(report, k)]
        lines += ["", "Stages (earliest stage not yet complete; `analysis.stages.stage_of`): "
                  + ", ".join(f"{iv['stage']} [{iv['start']}, {iv['end']})"
                              for iv in rr["stage_intervals"]), ""]
        lines += ["Regime conditions:", ""]
        lines += [f"- {'ok' if c['ok'] else 'FAILS'}: {c['name']} = "
                  f"{'n/a' if c['value'] is None else format(c['value'], '.3g')} "
                  f"(needs {c['bound']}; {c['why']})" for c in rr["regime"]]
        lines.append("")
    lines += ["Figures: " + ", ".join(f"[{f}]({f})" for f in report["figures"]), ""]
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike, history: History | None = None) -> str:
    """Analyze a run directory; add ``report.md``, ``report.json``, ``stages.png`` and
    ``loss.png`` to it as a whole (:func:`simulator.rundir.add_to_run_dir`; a run
    directory from before manifests gets the files one by one); return the printable
    table. ``history``: the run's history when the caller has it (not read again)."""
    run_dir = Path(run_dir)
    history = History.load(run_dir) if history is None else history
    report = build_report(history)
    files = {REPORT_JSON: json.dumps(report, indent=1, allow_nan=False) + "\n",
             REPORT_MD: _markdown(report)}
    files.update(figure_files(history))
    add_files(run_dir, history, files)
    table = format_table(report)
    return table + f"\nwrote {run_dir / REPORT_MD}, {REPORT_JSON}, " + ", ".join(figure_names(history))


def figure_names(history: History) -> list[str]:
    """The report's figures: ``stages.png`` (``patches.png`` for inputs of more than two
    patches, which have no stage analysis) and ``loss.png``."""
    return [STAGES_PNG if history.config.n_patches == 2 else PATCHES_PNG, LOSS_PNG]


def figure_files(history: History, **stages_options) -> dict[str, bytes]:
    """The bytes of the report's figures (:func:`figure_names`) of ``history``;
    ``stages_options`` go to the stages figure."""
    import tempfile

    from .figures import save_loss_figure, save_patches_figure, save_stages_figure

    savers = {STAGES_PNG: lambda h, p: save_stages_figure(h, p, **stages_options),
              PATCHES_PNG: save_patches_figure, LOSS_PNG: save_loss_figure}
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in figure_names(history):
            save = savers[name]
            save(history, Path(tmp) / name)
            if (Path(tmp) / name).is_file():
                files[name] = (Path(tmp) / name).read_bytes()
    return files


def add_files(run_dir: str | os.PathLike, history: History, files: dict) -> None:
    """Add ``files`` (name -> text or bytes) to the run directory of ``history`` as a
    whole (:func:`simulator.rundir.add_to_run_dir`, refused if the directory now holds
    another run); a run directory from before manifests gets them one by one."""
    from simulator.rundir import MissingManifestError, add_to_run_dir, config_digest, read_manifest

    run_dir = Path(run_dir)
    try:
        read_manifest(run_dir)
    except MissingManifestError:
        for name, data in files.items():
            atomic_write_with(run_dir / name, lambda fh, data=data: fh.write(
                data.encode() if isinstance(data, str) else data))
    else:
        add_to_run_dir(run_dir, files, expect_config_digest=config_digest(history.config))


def load_report(run_dir: str | os.PathLike) -> dict:
    """Read ``report.json`` of a run directory."""
    with open(Path(run_dir) / REPORT_JSON, encoding="utf-8") as fh:
        return json.load(fh)
