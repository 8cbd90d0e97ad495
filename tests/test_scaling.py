"""Scaling laws across a sweep (analysis.scaling, analysis.tables, ``python -m analysis scaling``)."""

import csv
import json
import math

import numpy as np
import pytest

pd = pytest.importorskip("pandas")      # guard only: CI installs the `labelled` extra

from analysis.scaling import (Prediction, ScalingError, fit_power_law, predicted_exponent,  # noqa: E402
                              scaling_study, scaling_table, verdict)
from analysis.tables import load_sweep                                                   # noqa: E402
from simulator import SimulationConfig                                                   # noqa: E402
from workflows.analysis_cli import main                                                  # noqa: E402
from workflows.sweep import expand, run_sweep                                            # noqa: E402


def power_law_samples(slope, xs=(1.0, 2.0, 4.0, 8.0), seeds=16, spread=0.2, seed=1):
    """y = 50 x^slope times log-normal seed noise of relative size ``spread``."""
    rng = np.random.default_rng(seed)
    return [50 * x ** slope * np.exp(spread * rng.standard_normal(seeds)) for x in xs]


def write_results(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def synthetic_sweep(path, *, etas=(2.5e-5, 5e-5, 1e-4, 2e-4), seeds=16, slope=-1.0, labels=("signgd",),
                    nan_at=None):
    """A results.csv of T2 = c eta^slope (seed noise 20%), steps derived from eta."""
    rng = np.random.default_rng(3)
    rows = []
    for label in labels:
        for eta in etas:
            for seed in range(seeds):
                t2 = 0.00135 * eta ** slope * math.exp(0.2 * rng.standard_normal())
                if nan_at is not None and eta == nan_at:
                    t2 = math.nan
                rows.append({"point": f"p{eta}{label}", "label": label, "optimizer": "signgd",
                             "eta": eta, "steps": round(0.2 / eta), "sigma_0": 0.005, "seed": seed,
                             "T2": t2, "T4": math.nan, "final_test_loss": 0.5, "s21_decay": "quadratic",
                             "in_regime": True, "regime_failures": ""})
    return write_results(path, rows)


# --- the fit on synthetic data --------------------------------------------------

@pytest.mark.parametrize("slope", [-1.0, -0.5, 1.0])
def test_the_interval_contains_a_known_slope(slope):
    xs = (1.0, 2.0, 4.0, 8.0)
    fit = fit_power_law(xs, power_law_samples(slope, xs))
    # 16 seeds with 20% noise: the mean at each x is known to about 5%, so the slope over
    # a factor 8 in x to about 0.05/log(8)*sqrt(2) ~ 0.03; the interval is that wide
    assert fit.ci_low <= slope <= fit.ci_high
    assert 0.02 < fit.ci_high - fit.ci_low < 0.2
    assert fit.slope == pytest.approx(slope, abs=0.05)


def test_a_wrong_prediction_disagrees_and_no_prediction_is_not_applicable():
    fit = fit_power_law((1.0, 2.0, 4.0, 8.0), power_law_samples(-0.5))
    assert verdict(Prediction(-0.5, "", "", ""), fit) == "agrees"
    assert verdict(Prediction(-1.0, "", "", ""), fit) == "disagrees"
    assert verdict(None, fit) == "not applicable"


def test_the_bootstrap_is_reproducible_and_seeded():
    samples = power_law_samples(-1.0)
    xs = (1.0, 2.0, 4.0, 8.0)
    a, b = fit_power_law(xs, samples), fit_power_law(xs, samples)
    c = fit_power_law(xs, samples, seed=7)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


def test_exact_power_law_data_give_the_exact_slope():
    xs = (1.0, 3.0, 9.0)
    samples = [np.full(4, 7.0 * x ** -0.5) for x in xs]     # no seed noise at all
    fit = fit_power_law(xs, samples)
    assert fit.slope == pytest.approx(-0.5, abs=1e-12)
    assert fit.ci_low == pytest.approx(-0.5, abs=1e-12) and fit.ci_high == pytest.approx(-0.5, abs=1e-12)
    assert fit.slope_se == pytest.approx(0.0, abs=1e-12)


def test_the_table_of_predictions_names_its_derivation():
    p = predicted_exponent("T2", "s")
    assert p.exponent == -0.5 and "section 6" in p.reference and p.conditions
    assert predicted_exponent("T4", "eta").exponent == -1.0
    assert predicted_exponent("T2", "sigma_0").exponent == 1.0
    assert predicted_exponent("final_test_loss", "eta") is None


# --- a sweep's table ------------------------------------------------------------

def test_a_synthetic_sweep_agrees_with_the_theory(tmp_path):
    study = scaling_study(synthetic_sweep(tmp_path / "sw"), "eta", ["T2"])
    s, = study.series                        # steps follows eta: no split
    assert s.verdict == "agrees" and s.prediction.exponent == -1.0
    assert [p.x for p in s.points] == [2.5e-5, 5e-5, 1e-4, 2e-4]
    assert all(p.n == 16 and p.ci_low < p.mean < p.ci_high for p in s.points)


def test_a_label_that_varies_splits_the_series(tmp_path):
    study = scaling_study(synthetic_sweep(tmp_path / "sw", labels=("signgd", "adam")), "eta", ["T2"])
    assert [s.group for s in study.series] == [{"label": "signgd"}, {"label": "adam"}]


def test_per_x_statistics_are_mean_std_and_a_t_interval(tmp_path):
    study = scaling_study(synthetic_sweep(tmp_path / "sw"), "eta", ["T2"])
    table = load_sweep(tmp_path / "sw")
    values = table.loc[table.eta == 5e-5, "T2"].to_numpy()
    p = study.series[0].points[1]
    assert p.mean == pytest.approx(values.mean()) and p.std == pytest.approx(values.std(ddof=1))
    half = 2.131449545559323 * values.std(ddof=1) / 4          # t_{0.975, 15} = 2.1314
    assert (p.ci_low, p.ci_high) == pytest.approx((values.mean() - half, values.mean() + half))


def test_values_of_x_with_too_few_seeds_are_left_out(tmp_path):
    path = synthetic_sweep(tmp_path / "sw", nan_at=2e-4)
    s, = scaling_study(path, "eta", ["T2"]).series
    assert [p.used for p in s.points] == [True, True, True, False] and s.fit.n_x == 3


@pytest.mark.parametrize("x, ys, options, message", [
    ("sigma_0", ["T2"], {}, "x sigma_0 does not vary in .*: every run has sigma_0=0.005"),
    ("eta", ["T4"], {}, "T4 was never reached: it is NaN in all 64 runs"),
    ("etaa", ["T2"], {}, "x 'etaa' is not a column of .* \\(fields that vary: eta, steps\\)"),
    ("eta", ["T5"], {}, "y 'T5' is not a column"),
    ("eta", ["s21_decay"], {}, "y 's21_decay' is not a numeric column"),
    ("eta", ["T2"], {"min_seeds": 17}, "only 0 value\\(s\\) of eta with at least 17 seeds that reached T2"),
    ("eta", ["T2"], {"min_seeds": 1}, "min_seeds must be at least 2"),
])
def test_refusals_are_one_line(tmp_path, x, ys, options, message):
    path = synthetic_sweep(tmp_path / "sw")
    with pytest.raises(ScalingError, match=message) as info:
        scaling_study(path, x, ys, **options)
    assert "\n" not in str(info.value)


def test_one_value_of_x_left_is_refused(tmp_path):
    path = synthetic_sweep(tmp_path / "sw", etas=(1e-4, 2e-4), nan_at=2e-4)
    with pytest.raises(ScalingError, match=r"only 1 value\(s\) of eta .*eta=0.0002: 0 of 16\); a slope needs 2"):
        scaling_study(path, "eta", ["T2"])


def test_x_must_be_positive_for_log_log():
    table = pd.DataFrame({"eta": [0.0, 0.0, 1.0, 1.0], "T2": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(ScalingError, match="log-log needs x > 0, but eta=0"):
        scaling_table(table, "eta", ["T2"], min_seeds=2)


# --- load_sweep: typed columns --------------------------------------------------

def test_load_sweep_types_the_columns_of_a_real_sweep(tmp_path):
    base = SimulationConfig(d=400, n=4, s=5, m_k=3, m_v=3, n_test=20, steps=40, sigma_0=0.05, eta=2e-3)
    points = expand(base, [{"mu_norm": [0.1, 1.0]}], seeds=2, derive=["record_every=max(1,steps//20)"])
    run_sweep(points, tmp_path, workers=1, progress=False)
    table = load_sweep(tmp_path)
    assert len(table) == 4
    dtypes = table.dtypes
    assert dtypes["mu_norm"] == "float64" and dtypes["steps"] == "int64" and dtypes["seed"] == "int64"
    assert dtypes["record_every"] == "int64" and table["record_every"].iloc[0] == 2
    # laws need every step recorded: unchecked here, so NaN (never 0) and a float column
    assert dtypes["T1"] == "float64" and dtypes["law1_mismatches"] == "float64"
    assert table["law1_mismatches"].isna().all()
    assert dtypes["in_regime"] == "bool"
    assert dtypes["label"] == "string" and dtypes["s21_decay"] == "string"
    assert dtypes["beta1"] == "float64" and table["beta1"].isna().all()     # SignGD has none


def test_load_sweep_of_a_directory_without_results_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a sweep directory: results.csv is missing"):
        load_sweep(tmp_path)


# --- the command line -----------------------------------------------------------

def test_the_command_writes_csv_json_png_and_pdf(tmp_path, capsys):
    path = synthetic_sweep(tmp_path / "sw")
    assert main(["scaling", str(path), "--x", "eta", "--y", "T2", "--boot", "500"]) == 0
    out = capsys.readouterr().out
    assert "agrees" in out and "seed bootstrap (500 resamples, seed 0)" in out
    stem = path / "scaling" / "scaling_eta_T2"
    for suffix in (".csv", "_points.csv", ".json", ".png", ".pdf"):
        assert (stem.parent / (stem.name + suffix)).stat().st_size > 0, suffix
    data = json.loads((stem.parent / "scaling_eta_T2.json").read_text())
    fit, = data["fits"]
    assert fit["verdict"] == "agrees" and fit["predicted"] == -1.0
    assert fit["ci_low"] <= -1.0 <= fit["ci_high"] and len(fit["points"]) == 4
    fits = pd.read_csv(stem.parent / "scaling_eta_T2.csv")
    assert list(fits["verdict"]) == ["agrees"]


@pytest.mark.parametrize("argv, message", [
    (["--x", "sigma_0", "--y", "T2"], "x sigma_0 does not vary"),
    (["--x", "eta", "--y", "T4"], "T4 was never reached"),
    (["--x", "eta"], "the following arguments are required: --y"),
])
def test_the_command_refuses_in_one_line_with_exit_2(tmp_path, capsys, argv, message):
    path = synthetic_sweep(tmp_path / "sw")
    assert main(["scaling", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (path / "scaling").exists()


def test_the_command_refuses_a_missing_sweep(tmp_path, capsys):
    assert main(["scaling", str(tmp_path / "nope"), "--x", "eta", "--y", "T2"]) == 2
    assert "is not a directory" in capsys.readouterr().err


# --- a theory check on the simulator ----------------------------------------------

def test_T2_scales_as_one_over_eta_in_a_small_reduced_sweep(tmp_path):
    """Deterministic (fixed seeds and bootstrap seed): 8 seeds at two learning rates."""
    base = SimulationConfig(engine="reduced", reduced_init="distribution", d=10**9, n_test=10)
    points = expand(base, [{"eta": [1e-4, 2e-4]}], seeds=8,
                    derive=["steps=0.06/eta", "record_every=1"])
    run_sweep(points, tmp_path, workers=1, progress=False)
    s, = scaling_study(tmp_path, "eta", ["T2"]).series
    assert s.verdict == "agrees", (s.fit.slope, s.fit.ci)
