"""Run directories and bad input at the command line (the cases of the fault probe):
runs written as a whole and never mixed, non-finite values and unwritable outputs
refused in one line with exit status 2, damaged run directories reported in one line."""

import json
import os

import numpy as np
import pytest

from workflows.analysis_cli import main as analysis_main
from workflows.run import main as run_main

SMALL = ["--d", "2000", "--n", "4", "--s", "5", "--m-k", "3", "--m-v", "3", "--n-test", "30",
         "--steps", "30", "--quiet"]


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "warning:" not in line]
    assert len(lines) == 1, err
    return lines[0]


def test_a_rerun_replaces_the_whole_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["run", *SMALL, "--out", str(out)]) == 0          # with its report
    assert sorted(p.name for p in out.iterdir()) == [                 # no overlapping figures
        "config.json", "history.npz", "loss.png", "manifest.json", "report.json", "report.md",
        "stages.png"]
    assert run_main(["run", *SMALL, "--optimizer", "adam", "--no-report", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "history.npz", "manifest.json", "training.png"]
    assert json.loads((out / "config.json").read_text())["optimizer"] == "adam"


@pytest.mark.parametrize("args, field", [
    (["--sigma-p", "1e154", "--steps", "20"], "sigma_p"),
    (["--mu-norm", "1e200"], "mu_norm"),
    (["--mu-norm", "1e308"], "mu_norm"),
    (["--engine", "reduced", "--reduced-init", "distribution", "--optimizer", "gd",
      "--mu-norm", "1e200"], "mu_norm"),
])
def test_non_finite_values_exit_2_naming_the_field(tmp_path, capsys, args, field):
    assert run_main(["run", *SMALL, *args, "--out", str(tmp_path / "r")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "non-finite" in line and f"lower {field}" in line, line
    assert not (tmp_path / "r").exists()                              # nothing written


def test_noiseless_signal_free_inputs_run(tmp_path, capsys):
    assert run_main(["run", *SMALL, "--sigma-p", "0", "--mu-norm", "0", "--no-report",
                     "--out", str(tmp_path / "r")]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert run_main(["run", *SMALL, "--out", str(locked / "r")]) == 2
    assert "is not writable" in one_line(capsys.readouterr().err)


def test_a_non_run_directory_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert run_main(["run", *SMALL, "--out", str(tmp_path)]) == 2
    assert "not a run directory" in one_line(capsys.readouterr().err)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture
def saved_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["run", *SMALL, "--no-report", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _edit_config(run):
    cfg = json.loads((run / "config.json").read_text())
    cfg["n"] = 2                                                      # the history has n = 4
    (run / "config.json").write_text(json.dumps(cfg))


def _truncate(run):
    data = (run / "history.npz").read_bytes()
    (run / "history.npz").write_bytes(data[: len(data) // 2])


def _flip_bit(run):
    data = bytearray((run / "history.npz").read_bytes())
    data[len(data) // 2] ^= 0x10
    (run / "history.npz").write_bytes(bytes(data))


def _empty(run):
    (run / "history.npz").write_bytes(b"")


def _not_npz(run):
    (run / "history.npz").write_text("not an archive")


@pytest.mark.parametrize("damage", [_edit_config, _truncate, _flip_bit, _empty, _not_npz])
@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_damaged_run_directory_is_one_line_exit_2(saved_run, capsys, damage, command):
    damage(saved_run)
    assert analysis_main([command, str(saved_run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("python -m analysis: error:") and str(saved_run) in line, line


def test_a_history_without_manifest_is_checked_against_its_config(saved_run, capsys):
    """Run directories from before manifests still load, with the schema checks:
    a config that disagrees with the arrays' shapes is named."""
    (saved_run / "manifest.json").unlink()
    _edit_config(saved_run)
    assert analysis_main(["report", str(saved_run)]) == 2
    assert "implies" in one_line(capsys.readouterr().err)


def test_a_history_holding_nan_is_refused_on_load(saved_run, capsys):
    (saved_run / "manifest.json").unlink()
    with np.load(saved_run / "history.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["Qn"][3] = np.nan
    np.savez(saved_run / "history.npz", **arrays)
    assert analysis_main(["report", str(saved_run)]) == 2
    assert "Qn holds non-finite values" in one_line(capsys.readouterr().err)


def test_bench_needs_enough_steps_to_time(capsys):
    assert run_main(["bench", "--steps", "1"]) == 2
    assert "--steps must be an integer from 10 to 100000, got 1" in one_line(capsys.readouterr().err)


def test_an_output_path_that_is_a_directory_does_not_break_plot_or_report(saved_run, capsys):
    """Figures and the report are added to the run as a whole: a stray directory in
    the place of an output file is dropped with the rest of what the manifest does
    not list, and the run stays readable."""
    (saved_run / "stages.png").mkdir()
    assert analysis_main(["plot", str(saved_run)]) == 0
    assert (saved_run / "stages.png").is_file() and (saved_run / "loss.png").is_file()
    (saved_run / "report.md").mkdir()
    assert analysis_main(["report", str(saved_run)]) == 0
    assert (saved_run / "report.md").is_file()
    from simulator.rundir import verify_run_dir
    assert {"stages.png", "loss.png", "report.md"} <= set(verify_run_dir(saved_run).files)
