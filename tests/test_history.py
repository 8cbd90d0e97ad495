"""Recorded histories (``simulator.history``) and atomic writes (``simulator.io``)."""

import os
import stat

import numpy as np
import pytest

from simulator import History, SimulationConfig, train
from simulator.history import PER_RUN, RECORDED
from simulator.io import atomic_write_text, atomic_write_with


@pytest.fixture(scope="module")
def history():
    cfg = SimulationConfig(d=200, n=3, s=4, m_k=2, m_v=3, n_test=20, steps=12, n_seeds=2,
                           sigma_0=0.05, eta=1e-3, record_every=5)
    return train(cfg).history


def test_history_has_the_documented_arrays_and_shapes(history):
    cfg = history.config
    T, R, n, m_k = 4, cfg.n_seeds, cfg.n, cfg.m_k              # steps 0, 5, 10, 12
    assert set(history.arrays) == set(RECORDED) | set(PER_RUN)
    shapes = {"step": (T,), "wall_time": (T,), "train_loss": (T, R), "margin": (T, R, n),
              "Qn": (T, R, m_k, n), "Qs": (T, R, m_k), "softmax": (T, R, n, 2, 2),
              "seeds": (R,), "xi_l1": (R, n), "underflow_step": (R, n),
              "test_overlap_fraction": (R,)}
    for name, shape in shapes.items():
        assert history[name].shape == shape, name
    assert history.steps.tolist() == [0, 5, 10, 12]
    assert history.n_runs == R


def test_save_load_round_trip_is_exact(history, tmp_path):
    out = history.save(tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "history.npz", "manifest.json"]
    loaded = History.load(out)
    assert loaded.config == history.config
    assert set(loaded.arrays) == set(history.arrays)
    for name, a in history.arrays.items():
        b = loaded[name]
        assert b.dtype == a.dtype and np.array_equal(a, b), name
    assert loaded.to_bytes() == history.to_bytes()
    with np.load(out / "history.npz", allow_pickle=False) as data:
        assert set(data.files) == set(history.arrays)


def test_save_overwrites_and_leaves_no_temporary_files(history, tmp_path):
    history.save(tmp_path)
    history.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "history.npz", "manifest.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_with(target, lambda fh: fh.write(b"old"))

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    atomic_write_text(tmp_path / "y.txt", "héllo\n")
    assert (tmp_path / "y.txt").read_text(encoding="utf-8") == "héllo\n"


def test_load_of_a_non_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="history.npz is missing"):
        (tmp_path / "config.json").write_text("{}")
        History.load(tmp_path)


def test_run_selects_one_run(history):
    one = history.run(1)
    assert one.config.seed == history.config.seed + 1 and one.config.n_seeds == 1
    assert np.array_equal(one["Qn"], history["Qn"][:, 1:2])
    assert np.array_equal(one["xi_l1"], history["xi_l1"][1:2])
    assert np.array_equal(one["step"], history["step"])


def test_missing_array_names_the_available_ones(history):
    with pytest.raises(KeyError, match="history has no array 'nope'; it has: Kn, Ks"):
        history["nope"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_files_get_the_usual_permissions(history, tmp_path):
    # like open(): 0666 minus the umask (a temporary file would be 0600)
    umask = os.umask(0)
    os.umask(umask)
    history.save(tmp_path)
    for name in ("config.json", "history.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_concat_of_seed_ranges_is_the_batch(tiny_config):
    """A batch trained as two contiguous seed ranges in two processes
    (workflows.parallel.train_split) equals the batch trained at once, to rounding."""
    from workflows.parallel import train_split

    config = tiny_config.replace(n_seeds=5, steps=40)
    whole = train(config).history
    split, cpus = train_split(config, workers=2)
    assert len(cpus) == 2
    for name in whole.arrays:
        if name != "wall_time":
            np.testing.assert_allclose(split[name], whole[name], rtol=1e-12, atol=1e-15, err_msg=name)
