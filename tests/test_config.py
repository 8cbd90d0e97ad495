"""Config validation (``simulator.config``): one-line errors naming the field."""

import json
import math

import numpy as np
import pytest

from simulator import ConfigError, SimulationConfig, train


def test_defaults_are_valid_and_documented_values():
    cfg = SimulationConfig()
    assert cfg.n_weight_rows == 2 * cfg.m_k + 2 * cfg.m_v
    assert cfg.seeds == (cfg.seed,)


@pytest.mark.parametrize("changes, match", [
    # noise sparsity out of range
    (dict(s=0), r"^s must be an integer between 1 and 19999, got 0$"),
    (dict(d=50, s=50), r"^s must be an integer between 1 and 49, got 50$"),
    (dict(s=-3), r"^s must be an integer between 1 and"),
    # negative / infinite / nan rates and scales
    (dict(eta=-1e-3), r"^eta must be finite and in \(0, inf\), got -0\.001$"),
    (dict(eta=0.0), r"^eta must be finite and in \(0, inf\), got 0\.0$"),
    (dict(eta=math.inf), r"^eta must be finite and in \(0, inf\), got inf$"),
    (dict(eta=math.nan), r"^eta must be finite and in \(0, inf\), got nan$"),
    (dict(sigma_0=0.0), r"^sigma_0 must be finite"),
    (dict(sigma_0=-1.0), r"^sigma_0 must be finite"),
    (dict(sigma_p=-1.0), r"^sigma_p must be finite and in \[0, inf\), got -1\.0$"),
    (dict(sigma_p=math.inf), r"^sigma_p must be finite"),
    (dict(mu_norm=math.nan), r"^mu_norm must be finite"),
    (dict(label_flip=0.6), r"^label_flip must be finite and in \[0, 0\.5\], got 0\.6$"),
    (dict(beta1=1.0), r"^beta1 must be finite and in \[0, 1\), got 1\.0$"),
    (dict(beta2=-0.1), r"^beta2 must be finite and in \[0, 1\)"),
    (dict(eps=-1e-8), r"^eps must be finite and in \[0, inf\)"),
    (dict(eta="0.1"), r"^eta must be a number, got '0\.1'$"),
    (dict(eta=True), r"^eta must be a number, got True$"),
    # non-integer sizes
    (dict(n=2.5), r"^n must be an integer, got 2\.5$"),
    (dict(d="100"), r"^d must be an integer, got '100'$"),
    (dict(m_k=True), r"^m_k must be an integer, got True$"),
    (dict(steps=math.inf), r"^steps must be an integer, got inf$"),
    (dict(n_seeds=0), r"^n_seeds must be an integer >= 1, got 0$"),
    (dict(steps=-1), r"^steps must be an integer >= 0, got -1$"),
    (dict(d=1), r"^d must be an integer >= 2, got 1$"),
    (dict(seed=-1), r"^seed must be an integer between 0 and"),
    (dict(record_every=0), r"^record_every must be an integer >= 1, got 0$"),
    (dict(seed=2**63 - 1, n_seeds=2), r"^seed \+ n_seeds - 1 must be at most 9223372036854775807"),
    # unknown choices
    (dict(optimizer="sgd"), r"^optimizer must be one of signgd, gd, adam, signum, normgd, lion; got 'sgd'$"),
    (dict(noise="gaussian"), r"^noise must be one of sparse, dense, none; got 'gaussian'$"),
    (dict(signal_position="last"), r"^signal_position must be one of first, random; got 'last'$"),
    (dict(engine="fast"), r"^engine must be one of full, reduced; got 'fast'$"),
    (dict(coordinates="some"), r"^coordinates must be one of active, all; got 'some'$"),
    (dict(engine="reduced", coordinates="all"), r"^coordinates='all' applies to engine='full' only"),
])
def test_invalid_config_raises_one_line_error(changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        SimulationConfig(**changes)
    assert "\n" not in str(info.value)


def test_replace_validates_again():
    with pytest.raises(ConfigError, match=r"^n must be an integer >= 1, got 0$"):
        SimulationConfig().replace(n=0)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        SimulationConfig().n = 3


def test_integral_floats_become_ints():
    cfg = SimulationConfig(n=4.0, d=100.0, s=5)
    assert cfg.n == 4 and type(cfg.n) is int and type(cfg.d) is int


def test_numbers_become_floats():
    cfg = SimulationConfig(eta=1, sigma_p=2)
    assert type(cfg.eta) is float and type(cfg.sigma_p) is float


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    # sweeps build configs from numpy arrays (np.arange, np.logspace)
    cfg = SimulationConfig(n=np.int64(4), d=np.int32(100), s=np.int64(5),
                           eta=np.float64(1e-3), sigma_p=np.float32(2.0), mu_norm=np.int64(1))
    assert type(cfg.n) is int and type(cfg.d) is int and type(cfg.s) is int
    assert type(cfg.eta) is float and type(cfg.sigma_p) is float and type(cfg.mu_norm) is float
    assert SimulationConfig.from_json(cfg.to_json()) == cfg


def test_json_round_trip(tmp_path):
    cfg = SimulationConfig(d=123, n=5, s=7, optimizer="adam", eta=0.25, seed=9, n_seeds=3)
    assert SimulationConfig.from_json(cfg.to_json()) == cfg
    assert SimulationConfig.from_dict(json.loads(cfg.to_json())) == cfg
    path = tmp_path / "config.json"
    cfg.save(path)
    assert SimulationConfig.load(path) == cfg
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


@pytest.mark.parametrize("text, match", [
    ("{not json", r"^config is not valid JSON"),
    ("[1, 2]", r"^config JSON must be an object"),
    ('{"n": 3, "learning_rate": 0.1}', r"^unknown config field\(s\): learning_rate$"),
    ('{"n": 0}', r"^n must be an integer >= 1, got 0$"),
])
def test_bad_config_json(text, match):
    with pytest.raises(ConfigError, match=match):
        SimulationConfig.from_json(text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^cannot read config file .*nope\.json"):
        SimulationConfig.load(tmp_path / "nope.json")


def test_largest_seed_runs():
    cfg = SimulationConfig(d=50, n=2, s=3, m_k=1, m_v=1, n_test=5, steps=2,
                           seed=2**63 - 2, n_seeds=2)
    assert train(cfg).history["seeds"].tolist() == [2**63 - 2, 2**63 - 1]
