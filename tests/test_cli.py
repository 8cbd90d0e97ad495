"""The command line (``python -m simulator``): a thin, quiet layer over the library."""

import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

from simulator import SimulationConfig
from workflows.run import build_parser, config_from_args, default_run_dir, main

SMALL = ["--d", "200", "--n", "3", "--s", "4", "--m-k", "2", "--m-v", "2",
         "--n-test", "20", "--steps", "20", "--sigma-0", "0.05", "--eta", "1e-3"]


def run_module(*args, cwd):
    return subprocess.run([sys.executable, "-m", "simulator", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_usage_error(stderr, match):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("python -m simulator"), stderr
    assert "Traceback" not in stderr
    assert match in lines[0], stderr


@pytest.mark.parametrize("args, match", [
    (["run", "--eta", "-1"], "eta must be finite and in (0, inf), got -1.0"),
    (["run", "--bogus", "3"], "unrecognized arguments: --bogus"),
])
def test_bad_option_subprocess_exits_2_with_one_line(tmp_path, args, match):
    proc = run_module(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_line_usage_error(proc.stderr, match)
    assert list(tmp_path.iterdir()) == [], "a failed run must not write anything"


@pytest.mark.parametrize("args, match", [
    ([], "choose a command"),
    (["fly"], "invalid choice: 'fly'"),
    (["run", "--eta", "nan"], "eta must be finite and in (0, inf), got nan"),
    (["run", "--eta", "fast"], "argument --eta: invalid float value: 'fast'"),
    (["run", "--n", "2.5"], "argument --n: invalid int value: '2.5'"),
    (["run", "--s", "0"], "s must be an integer between 1 and 19999, got 0"),
    (["run", "--optimizer", "sgd"], "argument --optimizer: invalid choice: 'sgd'"),
    (["run", "--noise", "gaussian"], "argument --noise: invalid choice: 'gaussian'"),
    (["run", "--label-flip", "0.7"], "label_flip must be finite and in [0, 0.5], got 0.7"),
    (["run", "--config", "missing.json"], "cannot read config file missing.json"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_option_main_returns_2_with_one_line(tmp_path, monkeypatch, capsys, args, match):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_usage_error(err, match)
    assert list(tmp_path.iterdir()) == []


def test_bad_config_file_returns_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text('{"n": 3, "lr": 1}')
    assert main(["run", "--config", "c.json"]) == 2
    assert_one_line_usage_error(capsys.readouterr().err, "unknown config field(s): lr")


def check_run_dir(out, expected):
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.npz", "manifest.json", "training.png"]
    assert SimulationConfig.load(out / "config.json") == expected
    with np.load(out / "history.npz", allow_pickle=False) as data:
        assert data["train_loss"].shape == (expected.steps + 1, expected.n_seeds)
        assert np.isfinite(data["train_loss"]).all()
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_good_run_subprocess(tmp_path):
    out = tmp_path / "run"
    proc = run_module("run", *SMALL, "--out", str(out), "--no-report", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "trained 1 run(s) x 20 steps of signgd" in proc.stdout
    expected = SimulationConfig(d=200, n=3, s=4, m_k=2, m_v=2, n_test=20, steps=20,
                                sigma_0=0.05, eta=1e-3)
    check_run_dir(out, expected)


def test_config_file_round_trips(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = SimulationConfig(d=150, n=2, s=3, m_k=2, m_v=3, n_test=10, steps=15, sigma_0=0.05,
                           optimizer="adam", eta=2e-3, seed=4, n_seeds=2)
    cfg.save(tmp_path / "in.json")
    assert main(["run", "--config", "in.json", "--out", "a", "--no-report", "--quiet"]) == 0
    assert "trained 2 run(s) x 15 steps of adam" in capsys.readouterr().out
    check_run_dir(tmp_path / "a", cfg)
    # the saved config.json parses back to the same config; options apply on top
    parser = build_parser()
    again = config_from_args(parser.parse_args(["run", "--config", "a/config.json"]))
    assert again == cfg
    changed = config_from_args(parser.parse_args(
        ["run", "--config", "a/config.json", "--seed", "7", "--sigma-p", "2"]))
    assert changed == cfg.replace(seed=7, sigma_p=2.0)


def test_options_cover_every_config_field():
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert config_from_args(args) == SimulationConfig()
    for f in fields(SimulationConfig):
        assert hasattr(args, f.name), f.name


def test_default_run_dir_names_the_config():
    cfg = SimulationConfig(optimizer="gd", seed=3)
    path = default_run_dir(cfg)
    assert path.parent.name == "runs" and path.name.startswith("full-gd-seed3-")
    assert default_run_dir(cfg.replace(eta=1e-4)) != path


def test_out_that_is_a_file_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("x")
    assert main(["run", *SMALL, "--out", "taken", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_line_usage_error(err, "--out taken: exists and is not a directory")


def test_non_finite_run_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    # inputs beyond what float64 outputs can hold are bad input: one line, exit 2
    monkeypatch.chdir(tmp_path)
    assert main(["run", *SMALL, "--sigma-0", "1e200", "--out", "r", "--quiet"]) == 2
    assert_one_line_usage_error(capsys.readouterr().err, "non-finite output at step 0")
    assert not (tmp_path / "r").exists()


def test_run_and_sweep_names_do_not_change_when_a_field_is_added_at_its_default():
    """Names hash only the fields that differ from the defaults, so a field at its
    default never enters a name: adding a new field (at its default) renames no run
    directory and recomputes no sweep point. Changing any value still renames."""
    import hashlib
    import json
    from dataclasses import fields

    from workflows.sweep import point_key

    cfg = SimulationConfig(eta=1e-4, n_seeds=3)
    assert cfg.changes() == {"eta": 1e-4, "n_seeds": 3}
    assert cfg.digest() == hashlib.sha256(json.dumps({"eta": 1e-4, "n_seeds": 3},
                                                     sort_keys=True).encode()).hexdigest()[:8]
    assert default_run_dir(cfg).name.endswith(cfg.digest())
    key = point_key(cfg, None)
    default = SimulationConfig()
    for f in fields(SimulationConfig):
        if f.name not in ("eta", "n_seeds"):      # each field set explicitly to its default
            same = cfg.replace(**{f.name: getattr(default, f.name)})
            assert (default_run_dir(same), point_key(same, None)) == (default_run_dir(cfg), key), f.name
    assert default_run_dir(cfg.replace(eta=2e-4)) != default_run_dir(cfg)
    assert point_key(cfg.replace(seed=5), None) != key


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_every_variant_option_runs_from_the_cli_in_both_engines(tmp_path, monkeypatch, capsys, engine):
    """The variant options of the model and the training, together, from the command
    line: the run trains, its config holds them, the report is written (patches.png
    for more than two patches) and says why the stage claims do not apply."""
    monkeypatch.chdir(tmp_path)
    args = ["run", *SMALL, "--d", "100000", "--engine", engine, "--score-scale", "0.3",
            "--pooling", "mean", "--feature-noise", "0.2", "--batch-size", "2",
            "--n-patches", "3", "--signal-position", "random", "--out", "out"]
    if engine == "reduced":
        args += ["--reduced-init", "distribution"]
    assert main(args) == 0, capsys.readouterr().err
    cfg = SimulationConfig.from_json((tmp_path / "out" / "config.json").read_text())
    assert (cfg.score_scale, cfg.pooling, cfg.feature_noise, cfg.batch_size, cfg.n_patches,
            cfg.signal_position) == (0.3, "mean", 0.2, 2, 3, "random")
    assert (tmp_path / "out" / "patches.png").is_file() and not (tmp_path / "out" / "stages.png").exists()
    out = capsys.readouterr().out
    assert "not applicable" in out and "agrees" in out


@pytest.mark.parametrize("args, match", [
    (["--n-patches", "1"], "n_patches must be an integer between 2 and 64, got 1"),
    (["--n-patches", "3", "--engine", "reduced", "--d", "20", "--n", "3", "--s", "4"],
     "impossible with n * (n_patches - 1) * s = 24 > d - 1 = 19"),
    (["--n-patches", "3", "--data", "digits"], "n_patches=3 is not available with data='digits'"),
])
def test_variant_refusals_are_one_line(tmp_path, monkeypatch, capsys, args, match):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *args]) == 2
    assert_one_line_usage_error(capsys.readouterr().err, match)
