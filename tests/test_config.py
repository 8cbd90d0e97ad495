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
    (dict(n_seeds=0), r"^n_seeds must be an integer between 1 and 2147483647, got 0$"),
    (dict(steps=-1), r"^steps must be an integer between 0 and 9007199254740992, got -1$"),
    (dict(d=1), r"^d must be an integer between 2 and 9223372036854775807, got 1$"),
    (dict(seed=-1), r"^seed must be an integer between 0 and"),
    (dict(record_every=0), r"^record_every must be an integer between 1 and 9007199254740992, got 0$"),
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
    with pytest.raises(ConfigError, match=r"^n must be an integer between 1 and 2147483647, got 0$"):
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
    ('{"n": 0}', r"^n must be an integer between 1 and 2147483647, got 0$"),
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


# --- upper bounds, undecodable input, memory (issue 12) ---

@pytest.mark.parametrize("changes, match", [
    (dict(d=10**30), r"^d must be an integer between 2 and 9223372036854775807, "
                     r"got 1000000000000000000000000000000$"),
    (dict(d=10**5000), r"^d must be an integer between 2 and 9223372036854775807, "
                       r"got an integer of 5001 digits$"),
    (dict(d=1e308), r"^d must be an integer between 2 and 9223372036854775807, got 1e\+308$"),
    (dict(n=2**31), r"^n must be an integer between 1 and 2147483647, got 2147483648$"),
    (dict(n_test=10**12), r"^n_test must be an integer between 1 and 2147483647"),
    (dict(m_k=2**40), r"^m_k must be an integer between 1 and 2147483647"),
    (dict(m_v=-5), r"^m_v must be an integer between 1 and 2147483647, got -5$"),
    (dict(n_seeds=1e15), r"^n_seeds must be an integer between 1 and 2147483647, got 1000000000000000\.0$"),
    (dict(steps=2**53 + 1), r"^steps must be an integer between 0 and 9007199254740992"),
    (dict(record_every=10**30), r"^record_every must be an integer between 1 and 9007199254740992, "
                                r"got 1000000000000000000000000000000$"),
    (dict(seed=2**63), r"^seed must be an integer between 0 and 9223372036854775807, got 9223372036854775808$"),
    (dict(eta=10**400), r"^eta must be finite and in \(0, inf\), got an integer of 401 digits$"),
    (dict(n=np.int64(-3)), r"^n must be an integer between 1 and 2147483647, got -3$"),
    (dict(noise=["sparse"]), r"^noise must be one of sparse, dense, none; got \['sparse'\]$"),
    (dict(noise=np.array([1, 2])), r"^noise must be one of sparse, dense, none; got array\(\[1, 2\]\)$"),
    (dict(eta=[[[[1.0]]]]), r"^eta must be a number, got \[\[\[\[1\.0\]\]\]\]$"),
    (dict(engine="x" * 1000), r"^engine must be one of full, reduced; got 'x{56}\.\.\.$"),
])
def test_bounds_give_one_line_naming_the_field(changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        SimulationConfig(**changes)
    assert "\n" not in str(info.value)


def test_largest_values_are_valid():
    cfg = SimulationConfig(d=2**63 - 1, steps=2**53, record_every=2**53, n_seeds=2**31 - 1)
    assert cfg.d == 2**63 - 1 and cfg.record_every == 2**53


@pytest.mark.parametrize("text, match", [
    ('{"d": %s}' % ("9" * 5000),
     r"^d must be an integer between 2 and 9223372036854775807, got an integer of 5000 digits$"),
    ('{"eta": -%s}' % ("1" * 5000), r"^eta must be finite and in \(0, inf\), got an integer of 5000 digits$"),
    ('{"n_seeds": 1e15}', r"^n_seeds must be an integer between 1 and 2147483647, got 1000000000000000\.0$"),
    ('{"n": 3, "d": ' + "[" * 100_000 + "]" * 100_000 + "}",
     r"^config is not valid JSON: the value of d is nested too deeply$"),
    ("[" * 100_000 + "]" * 100_000, r"^config is not valid JSON: the config is nested too deeply$"),
    ('{"eta": 1e999}', r"^eta must be finite and in \(0, inf\), got inf$"),
    ('{"eta": NaN}', r"^eta must be finite and in \(0, inf\), got nan$"),
])
def test_undecodable_config_json_gives_one_line(text, match):
    with pytest.raises(ConfigError, match=match) as info:
        SimulationConfig.from_json(text)
    assert "\n" not in str(info.value)


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(b'{"n": 3, "noise": "\xff"}')
    with pytest.raises(ConfigError, match=r"^config file .*config\.json is not UTF-8 text \(byte 19: b'\\xff'\)$"):
        SimulationConfig.load(path)


def test_config_file_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match=r"^cannot read config file .*: Is a directory$"):
        SimulationConfig.load(tmp_path)


def test_estimated_bytes_grows_with_each_size():
    from simulator.memory import estimated_bytes

    base = SimulationConfig()
    for name, bigger in [("n_test", 5000), ("d", 10**6), ("n", 80), ("n_seeds", 10),
                         ("steps", 40_000), ("m_k", 100), ("m_v", 100)]:
        changes = dict(coordinates="all") if name == "d" else {}
        assert estimated_bytes(base.replace(**changes, **{name: bigger})) > estimated_bytes(
            base.replace(**changes)), name
    assert estimated_bytes(base.replace(record_every=100)) < estimated_bytes(base)


@pytest.mark.parametrize("changes, match", [
    (dict(n_test=10**8), r"^n_test=100000000 needs about 2\.2 TB of memory \(limit 20 GB\); lower n_test$"),
    (dict(coordinates="all", d=10**8),
     r"^d=100000000 needs about 238 GB of memory \(limit 20 GB\); lower d or use coordinates='active'$"),
    (dict(noise="dense", d=10**8), r"^d=100000000 needs about 3\.9 TB of memory \(limit 20 GB\); lower d$"),
    (dict(steps=10**12), r"^steps=1000000000000 needs about 3\.9 PB of memory \(limit 20 GB\); "
                         r"lower steps or raise record_every$"),
    (dict(n_seeds=10**6), r"^n_seeds=1000000 needs about 17 TB .*; lower n_seeds or raise record_every$"),
    (dict(engine="reduced", n_test=10**9), r"^n_test=1000000000 needs about 376 GB .*; lower n_test$"),
    (dict(m_v=10**8), r"^m_v=100000000 needs about 56 TB .*; lower m_v$"),
    (dict(n=10**4, s=1000, d=10**9), r"^n=10000 needs about 1\.8 TB .*; lower n$"),
])
def test_check_memory_names_the_dominant_field(changes, match):
    from simulator.memory import check_memory

    with pytest.raises(ConfigError, match=match):
        check_memory(SimulationConfig(**changes), limit=20 * 10**9)


def test_check_memory_passes_the_default_and_returns_the_estimate():
    from simulator.memory import check_memory, estimated_bytes

    cfg = SimulationConfig()
    assert check_memory(cfg, limit=10**9) == estimated_bytes(cfg) < 10**8


@pytest.mark.parametrize("env, expected", [("12GB", 12 * 10**9), ("500 MB", 5 * 10**8),
                                           ("8e9", 8 * 10**9), ("none", None), ("2k", 2000)])
def test_memory_limit_from_the_environment(monkeypatch, env, expected):
    from simulator.memory import memory_limit

    monkeypatch.setenv("SIGNGD_MEMORY_LIMIT", env)
    assert memory_limit() == expected


def test_bad_memory_limit_in_the_environment(monkeypatch):
    from simulator.memory import memory_limit

    monkeypatch.setenv("SIGNGD_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match=r"^SIGNGD_MEMORY_LIMIT must be a number of bytes such as "
                                          r"8e9 or 12GB, or none; got 'lots'$"):
        memory_limit()


def test_default_memory_limit_is_a_fraction_of_the_machine(monkeypatch):
    from simulator.memory import _physical_memory, memory_limit

    monkeypatch.delenv("SIGNGD_MEMORY_LIMIT", raising=False)
    total = _physical_memory()
    assert total is None or memory_limit() == int(0.8 * total)


def test_engines_refuse_before_allocating(monkeypatch):
    import simulator.reduced
    import simulator.problem
    from simulator import run

    def never(*args, **kwargs):
        raise AssertionError("allocated")

    monkeypatch.setattr(simulator.problem, "build_problem", never)
    monkeypatch.setattr(simulator.reduced, "build_reduced_batch", never)
    monkeypatch.setenv("SIGNGD_MEMORY_LIMIT", "1MB")
    for engine in ("full", "reduced"):
        with pytest.raises(ConfigError, match=r"^n_test=100000 needs about .* \(limit 1\.0 MB\); lower n_test$"):
            run(SimulationConfig(engine=engine, n_test=100_000))
