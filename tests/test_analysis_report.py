"""Acceptance on the default SignGD run (the main job), the report files and the CLI.

The default config (``SimulationConfig()``) is the paper's regime with disjoint supports
and separated stages; a run takes about 5 s. Expectations come from the theory
(``docs/theory.md`` sections 5-7), not from a recorded run:

* laws 1-6 are exact, so zero mismatches at a tolerance of 1e-9 of one step;
* stages come in order T1 < T2 < T4 and T1 < T3 < T4;
* a pair aligns with the sign of its sum at its Stage II start (>= 99% of pairs);
* minority pairs flip in Stage IV; a negative query noise ends up positive;
* the training loss goes below 1e-3; the test loss stays near log 2, where it started
  (fresh test noise sees initial weights; margin ~ Vs + N(0, sigma_0^2 sigma_p^2 2s/m_v),
  Vs <= 2 eta ||mu|| steps = 0.02: the loss changes by about Vs / 2 = 0.01 < 0.05).
"""

import json
import math
import sys
import types

import pytest

from workflows.analysis_cli import main
from analysis.report import build_report, format_table, load_report, write_report
from analysis.summary import SUMMARY_KEYS, run_summary
from simulator import SimulationConfig, train
from workflows.run import main as simulator_main


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    history = train(SimulationConfig()).history
    run_dir = tmp_path_factory.mktemp("default_run")
    history.save(run_dir)
    table = write_report(run_dir)
    return history, run_dir, table


@pytest.fixture(scope="module")
def summary(default_run):
    return run_summary(default_run[0])[0]


def test_default_run_is_in_regime_with_disjoint_supports(default_run, summary):
    assert summary["shared_samples"] == 0, "default seed must have disjoint supports"
    assert summary["in_regime"], summary["regime_failures"]
    assert summary["analysis_error"] == ""


@pytest.mark.parametrize("law", range(1, 7))
def test_default_run_every_law_holds_exactly(summary, law):
    steps = SimulationConfig().steps
    assert summary[f"law{law}_checked"] >= steps, "every step pair must be checked"
    assert summary[f"law{law}_mismatches"] == 0
    assert summary[f"law{law}_max_error"] < 1e-9


def test_default_run_stages_in_order(summary):
    T1, T2, T3, T4 = (summary[k] for k in ("T1", "T2", "T3", "T4"))
    assert T1 < T2 < T4, (T1, T2, T4)
    assert T1 < T3 < T4, (T1, T3, T4)


def test_default_run_closed_form_stage_times(summary):
    assert summary["T1_predicted"] == summary["T1"]       # laws 1-2 are exact
    assert summary["T2_predicted"] == summary["T2"]


def test_default_run_aligned_sign_prediction(summary):
    assert summary["aligned_sign_accuracy"] >= 0.99
    # at-risk pairs are reported, not hidden; those predicted stuck are the ones oscillating
    assert summary["aligned_pairs_checked"] + summary["at_risk_pairs"] == summary["pairs"]
    assert summary["stuck_prediction_exact"]


def test_default_run_majority_votes_and_stage_four_flip(summary):
    assert summary["majority_signs_correct"] == summary["majority_signs"]
    assert summary["minority_pairs"] > 0
    assert summary["minority_key_flipped"] == summary["minority_pairs"]
    assert summary["query_noise_negative_to_positive"] > 0
    assert summary["final_key_noise_with_majority"] == 1.0


def test_default_run_outcomes(summary):
    assert summary["final_train_loss"] < 1e-3
    assert abs(summary["final_test_loss"] - summary["initial_test_loss"]) < 0.05
    assert abs(summary["initial_test_loss"] - math.log(2)) < 0.01
    assert summary["s21_decay"] == "quadratic"


def test_report_files_and_verdicts(default_run):
    history, run_dir, table = default_run
    for name in ("report.md", "report.json", "stages.png", "loss.png"):
        assert (run_dir / name).stat().st_size > 0, name
    for name in ("stages.png", "loss.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep = load_report(run_dir)
    verdicts = {row["key"]: row["verdict"] for row in rep["runs"][0]["rows"]}
    assert all(v == "agrees" for v in verdicts.values()), verdicts
    assert "disagrees" not in table and "law 3" in table


def test_report_json_round_trips_and_holds_its_config(default_run):
    history, run_dir, _ = default_run
    text = (run_dir / "report.json").read_text()
    rep = json.loads(text)
    assert rep == build_report(history)
    assert json.loads(json.dumps(rep, allow_nan=False)) == rep
    assert SimulationConfig.from_dict(rep["config"]) == history.config


def test_summary_keys_and_types_on_a_batch_and_other_optimizers(tiny_config):
    for optimizer in ("signgd", "gd", "adam"):
        h = train(tiny_config.replace(optimizer=optimizer, n_seeds=2)).history
        rows = run_summary(h)
        assert [r["seed"] for r in rows] == [tiny_config.seed, tiny_config.seed + 1]
        for row in rows:
            assert set(SUMMARY_KEYS) <= set(row), optimizer
            assert row["analysis_error"] == "", row["analysis_error"]
            for k, v in row.items():
                assert type(v) in (int, float, str, bool), (optimizer, k, type(v))
        if optimizer == "gd":
            assert all(rows[0][f"law{k}_mismatches"] > 0 for k in range(1, 7))


def test_batch_report_counts_verdicts_over_runs(tiny_config):
    rep = build_report(train(tiny_config.replace(n_seeds=2)).history)
    assert len(rep["runs"]) == 2
    table = format_table(rep)
    assert "over 2 runs (seeds 3..4):" in table
    for key, agg in rep["aggregate"].items():
        assert agg["runs"] == 2 and sum(agg["verdicts"].values()) == 2, key
        assert agg["agrees"] + len(agg["not_agreeing"]) == 2, key
        line = f"  {key}: {agg['agrees']} of 2 agree"
        assert line in table, line


def test_regime_failure_is_not_reported_as_a_finding(tiny_config):
    """Heavily shared supports (n^2 s^2 / 2d >> 1): laws 2-4 have nothing to check,
    and no prediction may be called a disagreement."""
    h = train(tiny_config.replace(d=20, s=8, n=5)).history
    rep = build_report(h)
    assert not rep["runs"][0]["in_regime"]
    verdicts = [row["verdict"] for row in rep["runs"][0]["rows"]]
    assert "disagrees" not in verdicts, verdicts
    assert "outside the theory's regime" in format_table(rep)


# ---------------------------------------------------------------- CLI
def test_cli_report_on_a_saved_run(tmp_path, tiny_config, capsys, monkeypatch):
    import analysis.figures as figures   # figures are drawn by the fixture and the plot test
    monkeypatch.setattr(figures, "save_stages_figure", lambda h, path: None)
    monkeypatch.setattr(figures, "save_loss_figure", lambda h, path: None)
    train(tiny_config).history.save(tmp_path)
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "prediction" in out and "verdict" in out
    assert json.loads((tmp_path / "report.json").read_text())["config"]["steps"] == 30


def test_cli_plot_on_a_saved_run(tmp_path, tiny_config):
    train(tiny_config).history.save(tmp_path)
    assert main(["plot", str(tmp_path), "--neuron", "1", "--color-step", "5"]) == 0
    for name in ("stages.png", "loss.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name


@pytest.mark.parametrize("argv, match", [
    ([], "choose a command"),
    (["bogus"], "invalid choice"),
    (["report"], "required"),
    (["report", "/nonexistent/run"], "is not a directory"),
    (["plot", "EMPTY"], "is not a run directory"),
    (["plot", "RUN", "--neuron", "5"], "neuron must be between 0 and 1, got 5"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, match, tmp_path, tiny_config, capsys):
    if "RUN" in argv:
        train(tiny_config).history.save(tmp_path)
    argv = [str(tmp_path) if a in ("EMPTY", "RUN") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m analysis"), err
    assert match in err[0]


def test_cli_delegates_sweep(monkeypatch):
    seen = []
    fake = types.ModuleType("workflows.sweep")
    fake.main = lambda argv: seen.append(argv) or 7
    monkeypatch.setitem(sys.modules, "workflows.sweep", fake)
    monkeypatch.setattr(sys.modules["analysis"], "sweep", fake, raising=False)
    assert main(["sweep", "--grid", "x"]) == 7
    assert seen == [["--grid", "x"]]


def test_main_job_ends_with_the_report(tmp_path, capsys):
    argv = ["run", "--out", str(tmp_path), "--quiet", "--d", "200", "--n", "3", "--s", "4",
            "--m-k", "2", "--m-v", "2", "--n-test", "20", "--steps", "20",
            "--sigma-0", "0.05", "--eta", "1e-3"]
    assert simulator_main(argv) == 0
    assert "verdict" in capsys.readouterr().out
    for name in ("report.md", "report.json", "stages.png", "loss.png"):
        assert (tmp_path / name).exists(), name
