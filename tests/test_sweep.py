"""The sweep runner (workflows.sweep): grid expansion, seeds, resume, executors.

Every point here is tiny (a few hundred steps of a small model), so a whole sweep
takes well under a second per point.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from workflows import sweep
from workflows.sweep import OptimizerSpec, SweepError, expand, main, read_table, run_sweep
from simulator import History, SimulationConfig, run

BASE = SimulationConfig(d=400, n=4, s=5, m_k=3, m_v=3, n_test=50, steps=120, record_every=10,
                        sigma_0=0.05, eta=2e-3, seed=11)
GRID = {"mu_norm": [0.1, 1.0], "sigma_p": [0.5, 1.0]}
OPTIMIZERS = ["signgd", "gd:eta=0.5"]


def numbers(rows):
    """Rows without the machine-dependent timing column."""
    return [{k: v for k, v in row.items() if k not in sweep.TIMING_COLUMNS} for row in rows]


def same(a, b):
    """Exact equality of two tables, NaN equal to NaN."""
    assert len(a) == len(b)
    for ra, rb in zip(numbers(a), numbers(b)):
        assert ra.keys() == rb.keys()
        for k in ra:
            va, vb = ra[k], rb[k]
            both_nan = isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb)
            assert both_nan or va == vb, f"column {k}: {va!r} != {vb!r}"


@pytest.fixture(scope="module")
def points():
    return expand(BASE, [GRID], seeds=2, optimizers=OPTIMIZERS)


@pytest.fixture(scope="module")
def serial(points, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    return run_sweep(points, out, workers=1, progress=False)


# --- grid expansion ---------------------------------------------------------

def test_expand_is_the_product_in_order(points):
    assert len(points) == 2 * 2 * 2
    got = [(dict(p.grid_values)["mu_norm"], dict(p.grid_values)["sigma_p"], p.label) for p in points]
    assert got == [(mu, sp, o) for mu in (0.1, 1.0) for sp in (0.5, 1.0) for o in OPTIMIZERS]
    assert all(p.config.n_seeds == 2 for p in points)
    assert len({p.key for p in points}) == len(points)


def test_per_optimizer_overrides_apply_to_that_optimizer_only(points):
    etas = {(p.label, p.config.optimizer, p.config.eta) for p in points}
    assert etas == {("signgd", "signgd", BASE.eta), ("gd:eta=0.5", "gd", 0.5)}


def test_a_grid_list_is_crossed_with_a_product():
    pts = expand(BASE, [[{"mu_norm": 0.1, "s": 3}, {"mu_norm": 2.0, "s": 7}], {"n": [2, 3]}])
    assert [(p.config.mu_norm, p.config.s, p.config.n) for p in pts] == [
        (0.1, 3, 2), (0.1, 3, 3), (2.0, 7, 2), (2.0, 7, 3)]


def test_a_repeated_config_runs_once():
    pts = expand(BASE, [[{"mu_norm": 0.1}, {"mu_norm": 0.1}]])
    assert len(pts) == 1


def test_the_key_is_a_hash_of_the_full_config():
    a, = expand(BASE, [{"mu_norm": [0.1]}])
    b, = expand(BASE.replace(n_test=51), [{"mu_norm": [0.1]}])
    c, = expand(BASE, [{"mu_norm": [0.1]}], match_train_loss=0.1)
    assert len({a.key, b.key, c.key}) == 3


@pytest.mark.parametrize("grid, message", [
    ({"bogus": [1]}, "grid: unknown config field 'bogus'"),
    ({"mu_norm": []}, "grid field 'mu_norm' needs a non-empty list of values"),
    ([{"s": 0}], r"point \(s=0\): s must be an integer between 1 and 399, got 0"),
])
def test_expand_names_the_bad_field(grid, message):
    with pytest.raises(SweepError, match=message):
        expand(BASE, [grid])


def test_grid_values_are_typed_after_the_field():
    assert sweep.parse_grid_option("s=4,8") == ("s", [4, 8])
    assert sweep.parse_grid_option("mu-norm=1,1e-2") == ("mu_norm", [1.0, 0.01])
    assert OptimizerSpec.parse("adam:beta1=0:beta2=0").overrides == (("beta1", 0.0), ("beta2", 0.0))


@pytest.mark.parametrize("argv, message", [
    (["--grid", "mu_nrom=1,2"], "unknown config field 'mu_nrom'"),
    (["--grid", "mu_norm=1,abc"], "--grid mu_norm: 'abc' is not a number"),
    (["--grid", "s=4,4.5"], "--grid s: '4.5' is not an integer"),
    (["--grid", "mu_norm=1,-2"], "mu_norm must be finite and in [0, inf), got -2.0"),
    (["--grid", "n_seeds=1,2"], "n_seeds is set by --seeds"),
    (["--grid", "mu_norm"], "expected FIELD=V1,V2"),
    (["--optimizers", "signgd,sgd"], "optimizer must be one of"),
    (["--optimizers", "gd:lr=0.1"], "unknown config field 'lr'"),
    (["--seeds", "0"], "seeds must be an integer >= 1, got 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m analysis sweep: error:")
    assert message in err
    assert not (tmp_path / "x").exists()


# --- seeds and rows ---------------------------------------------------------

def test_one_row_per_run_with_its_seed_and_config(serial, points):
    rows = serial.rows
    assert len(rows) == len(points) * 2
    assert [r["seed"] for r in rows] == [11, 12] * len(points)
    first = rows[0]
    assert (first["label"], first["optimizer"], first["mu_norm"], first["sigma_p"]) == ("signgd", "signgd", 0.1, 0.5)
    for key in ("final_train_loss", "final_test_loss", "final_test_error", "T1", "T4",
                "law1_checked", "law6_mismatches", "point_seconds"):
        assert key in first


def test_batched_seeds_match_single_runs(serial, points):
    """A point's seeds advance as one batch; each run equals the same seed run alone."""
    point, rows = points[0], serial.rows[:2]
    for row in rows:
        alone = run(point.config.replace(seed=row["seed"], n_seeds=1))
        assert row["final_train_loss"] == float(alone["train_loss"][-1, 0])
        assert row["final_test_loss"] == float(alone["test_loss"][-1, 0])


def test_the_csv_round_trips_the_numbers_exactly(serial):
    same(read_table(serial.out / sweep.RESULTS_FILE), serial.rows)


# --- resume -----------------------------------------------------------------

class Interrupt:
    """Raise KeyboardInterrupt after ``after`` points have been written."""

    def __init__(self, after):
        self.after, self.seen = after, 0

    def __call__(self, point):
        self.seen += 1
        if self.seen == self.after:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_recomputes_nothing_and_loses_nothing(
        points, serial, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    first = run_sweep(points, out, workers=1, progress=False, on_point_done=Interrupt(3))
    assert first.interrupted and len(first.computed) == 3
    assert len(read_table(out / sweep.RESULTS_FILE)) == 3 * 2      # partial table is written
    # a point that died mid-write leaves only a temporary file, which does not count
    (out / sweep.POINTS_DIR / ".deadbeef.json.1234.tmp").write_text("{")
    written = {p: p.read_bytes() for p in (out / sweep.POINTS_DIR).glob("*.json")}
    stamps = {p: p.stat().st_mtime_ns for p in written}

    calls = []
    real = sweep.compute_point
    monkeypatch.setattr(sweep, "compute_point", lambda *a: calls.append(a) or real(*a))
    second = run_sweep(points, out, workers=1, progress=False)
    assert not second.interrupted
    assert sorted(second.skipped) == sorted(first.computed)
    assert len(calls) == len(points) - 3
    assert {json.loads(a[0])["mu_norm"] for a in calls} <= {0.1, 1.0}
    for path, data in written.items():          # finished points untouched
        assert path.read_bytes() == data and path.stat().st_mtime_ns == stamps[path]
    same(read_table(out / sweep.RESULTS_FILE), serial.rows)

    calls.clear()
    third = run_sweep(points, out, workers=1, progress=False)
    assert calls == [] and len(third.skipped) == len(points)


def test_cli_reruns_only_missing_points(tmp_path, capsys):
    argv = ["--grid", "mu_norm=0.1,1", "--seeds", "2", "--optimizers", "signgd",
            "--out", str(tmp_path / "s"), "--workers", "1", "--quiet"]
    base = tmp_path / "base.json"
    BASE.save(base)
    argv += ["--base", str(base)]
    assert main(argv) == 0
    assert "2 points computed, 0 reused" in capsys.readouterr().out
    assert main(argv + ["--grid", "sigma_p=1"]) == 0   # same two configs: sigma_p=1 is the base
    assert "0 points computed, 2 reused" in capsys.readouterr().out
    assert main(argv[:1] + ["mu_norm=0.1,1,3"] + argv[2:]) == 0
    assert "1 points computed, 2 reused" in capsys.readouterr().out
    assert len(read_table(tmp_path / "s" / sweep.RESULTS_FILE)) == 6


def test_save_runs_writes_each_point_history(tmp_path):
    pts = expand(BASE, [{"mu_norm": [0.1]}], seeds=2)
    res = run_sweep(pts, tmp_path, workers=1, save_runs=True, progress=False)
    history = History.load(tmp_path / sweep.RUNS_DIR / pts[0].key)
    assert history.config == pts[0].config
    np.testing.assert_array_equal(history["train_loss"][-1], [r["final_train_loss"] for r in res.rows])


def test_matched_metrics_are_read_at_the_first_step_below_the_target(tmp_path):
    pts = expand(BASE, [{"mu_norm": [0.1]}], seeds=2, match_train_loss=0.5)
    res = run_sweep(pts, tmp_path, workers=1, progress=False, match_train_loss=0.5)
    history = run(pts[0].config)
    for r, row in enumerate(res.rows):
        k = int(np.argmax(history["train_loss"][:, r] <= 0.5))
        assert history["train_loss"][k, r] <= 0.5 < history["train_loss"][:k, r].min(initial=np.inf)
        assert row["matched_step"] == history.steps[k]
        assert row["matched_test_loss"] == history["test_loss"][k, r]


def test_a_failing_point_is_reported_and_the_others_finish(tmp_path, capsys):
    argv = ["--grid", "eta=1e-3,1e300", "--optimizers", "gd", "--out", str(tmp_path),
            "--workers", "1", "--quiet"]
    base = tmp_path / "base.json"
    BASE.save(base)
    assert main(argv + ["--base", str(base)]) == 1
    captured = capsys.readouterr()
    assert "(gd; eta=1e+300) failed:" in captured.err    # NonFiniteError or overflow
    assert "1 points computed" in captured.out
    assert len(read_table(tmp_path / sweep.RESULTS_FILE)) == 1


# --- executors give identical numbers ---------------------------------------

def test_process_pool_matches_serial(points, serial, tmp_path):
    pooled = run_sweep(points, tmp_path, workers=2, progress=False)
    assert sorted(pooled.computed) == sorted(p.key for p in points)
    same(pooled.rows, serial.rows)


def test_dask_local_cluster_matches_serial(points, serial, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        res = run_sweep(points, tmp_path, scheduler=cluster.scheduler_address, progress=False)
        assert sorted(res.computed) == sorted(p.key for p in points)
        # the same command through the CLI: everything is found done
        assert main(["--grid", "mu_norm=0.1,1", "--grid", "sigma_p=0.5,1", "--seeds", "2",
                     "--optimizers", ",".join(OPTIMIZERS), "--out", str(tmp_path),
                     "--scheduler", cluster.scheduler_address, "--quiet",
                     "--base", str(_saved_base(tmp_path))]) == 0
    same(res.rows, serial.rows)
    same(read_table(tmp_path / sweep.RESULTS_FILE), serial.rows)


def test_an_unreachable_scheduler_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(sweep, "CONNECT_TIMEOUT", "1s")
    assert main(["--grid", "mu_norm=0.1", "--out", str(tmp_path), "--quiet",
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "--scheduler tcp://127.0.0.1:9: cannot connect" in err


def _saved_base(tmp_path):
    path = tmp_path.parent / f"{tmp_path.name}-base.json"
    BASE.save(path)
    return path


def test_a_grid_file_lists_points(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps([{"mu_norm": 0.1, "s": 3}, {"mu_norm": 2.0, "s": 7}]))
    base = tmp_path / "base.json"
    BASE.save(base)
    assert main(["--base", str(base), "--grid-file", str(grid), "--out", str(tmp_path / "s"),
                 "--workers", "1", "--quiet"]) == 0
    rows = read_table(tmp_path / "s" / sweep.RESULTS_FILE)
    assert [(r["mu_norm"], r["s"]) for r in rows] == [(0.1, 3), (2.0, 7)]
    grid.write_text("{not json")
    assert main(["--grid-file", str(grid), "--out", str(tmp_path / "t"), "--quiet"]) == 2
    assert "--grid-file" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# faults: damaged point files, bad --out / --scheduler, signals, stale temporaries
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"key": "other", "rows": []}', b"[1, 2]"])
def test_a_damaged_point_file_is_recomputed_with_a_warning(tmp_path, damage):
    points = expand(BASE, [{"mu_norm": [0.1, 1.0]}])
    first = run_sweep(points, tmp_path, workers=1, progress=False)
    sweep.points_file(tmp_path, points[0].key).write_bytes(damage)
    with pytest.warns(UserWarning, match=r"is damaged .*computing the point again"):
        again = run_sweep(points, tmp_path, workers=1, progress=False)
    assert again.computed == [points[0].key] and again.skipped == [points[1].key]
    def numbers(rows):                 # the recomputed point gives the same numbers
        return [{k: v for k, v in r.items() if k != "point_seconds"} for r in rows]
    assert _same_rows(numbers(again.rows), numbers(first.rows))


@pytest.mark.parametrize("layout, message", [
    ("file", r"exists and is not a directory"),
    ("points-file", r"points exists and is not a directory"),
])
def test_an_unusable_out_is_refused_before_any_work(tmp_path, capsys, layout, message):
    out = tmp_path / "out"
    if layout == "file":
        out.write_text("x")
    else:
        out.mkdir()
        (out / "points").write_text("x")
    assert main(["--grid", "mu_norm=0.1", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err


def test_a_malformed_scheduler_address_is_refused_before_any_work(tmp_path, capsys):
    assert main(["--grid", "mu_norm=0.1", "--out", str(tmp_path / "s"), "--quiet",
                 "--scheduler", "not a url"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["python -m analysis sweep: error: --scheduler 'not a url': expected an "
                   "address like tcp://HOST:PORT"]
    assert not (tmp_path / "s").exists()


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    from simulator.io import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".results.csv.{dead}.abc123.tmp"
    live = tmp_path / f".results.csv.{os.getpid()}.def456.tmp"
    stale.write_text("half")
    live.write_text("being written")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


def test_sigterm_ends_a_process_pool_sweep_and_its_workers(tmp_path):
    """SIGTERM: exit 143, finished points kept, no worker left behind."""
    code = ("import sys; from workflows.sweep import main; "
            f"sys.exit(main(['--grid', 'steps=3000,3001,3002,3003', '--seeds', '2', "
            f"'--out', {str(tmp_path / 's')!r}, '--workers', '2', '--quiet']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)                                  # workers started, points in flight
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, err
    assert "interrupted: rerun the same command" in err
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not [pid for pid in children if _alive(pid)], "workers left behind"


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}/stat") else ""
    return bool(stat) and stat.split()[2] != "Z"


def _same_rows(a, b):
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(
            (isinstance(x[k], float) and isinstance(y[k], float) and math.isnan(x[k]) and math.isnan(y[k]))
            or x[k] == y[k] for k in x) for x, y in zip(a, b))


def test_an_absurd_grid_value_is_one_short_line(tmp_path, capsys):
    assert main(["--grid", "d=1e308", "--out", str(tmp_path / "s"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and len(err[0]) < 300, err
    assert "d must be an integer between 2 and 9223372036854775807" in err[0]
