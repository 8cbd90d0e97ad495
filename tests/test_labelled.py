"""Labelled histories (simulator.labelled): named dims, config attributes, netCDF round trip."""

import numpy as np
import pytest

xr = pytest.importorskip("xarray")      # guard only: CI installs the `labelled` extra
pytest.importorskip("h5netcdf")

from simulator import SimulationConfig, run                      # noqa: E402
from simulator.history import SCHEMA                            # noqa: E402
from simulator.labelled import load_netcdf                      # noqa: E402

CONFIG = SimulationConfig(d=400, n=4, s=5, m_k=3, m_v=3, n_test=50, steps=30, record_every=3,
                          n_seeds=2, seed=2**40)   # a seed beyond int32: netCDF4 keeps int64


@pytest.fixture(scope="module")
def history():
    return run(CONFIG)


def test_dims_are_named_after_the_schema(history):
    ds = history.to_xarray()
    assert ds["Qn"].dims == ("step", "run", "neuron", "noise_patch")
    assert ds["softmax"].dims == ("step", "run", "sample", "patch_query", "patch_key")
    assert ds["xi_l1"].dims == ("run", "noise_patch")
    assert ds["margin"].dims == ("step", "run", "sample")
    assert ds["Vs"].dims == ("step", "run")
    assert ds.sizes["step"] == history.steps.size and ds.sizes["neuron"] == CONFIG.m_k


def test_coordinates_are_steps_seeds_and_patch_names(history):
    ds = history.to_xarray()
    np.testing.assert_array_equal(ds["step"].values, history.steps)
    np.testing.assert_array_equal(ds["run"].values, [2**40, 2**40 + 1])
    assert list(ds["patch_key"].values) == ["signal", "noise"]
    # selection by label: the last recorded query noise of run seed 2**40 + 1, neuron 2
    np.testing.assert_array_equal(ds["Qn"].sel(run=2**40 + 1, neuron=2).isel(step=-1).values,
                                  history["Qn"][-1, 1, 2])


def test_config_and_meanings_are_attributes(history):
    ds = history.to_xarray()
    assert SimulationConfig.from_json(ds.attrs["config_json"]) == CONFIG
    assert ds.attrs["eta"] == CONFIG.eta and ds.attrs["engine"] == "full"
    assert "beta1" not in ds.attrs            # None (the optimizer's default): no attribute
    meanings = {f.name: f.meaning for f in SCHEMA}
    assert ds["Kn"].attrs["meaning"] == meanings["Kn"]


@pytest.mark.parametrize("engine", ["full", "reduced"])
def test_save_then_load_gives_identical_arrays_and_config(engine, tmp_path):
    config = (CONFIG.replace(engine=engine, optimizer="adam", reduced_init="distribution", d=10**9)
              if engine == "reduced" else CONFIG)
    history = run(config)
    path = history.save_netcdf(tmp_path / "sub" / "run.nc")
    loaded = load_netcdf(path)
    assert loaded.config == history.config
    assert list(loaded.arrays) == list(history.arrays)
    for name, array in history.arrays.items():
        assert loaded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["run.nc"]   # no temporary left


def test_loading_refuses_what_is_not_a_history(tmp_path):
    with pytest.raises(FileNotFoundError, match="no netCDF file"):
        load_netcdf(tmp_path / "missing.nc")
    xr.Dataset({"a": ("x", np.arange(3))}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match="not a history file: it has no config_json"):
        load_netcdf(tmp_path / "other.nc")


def test_noise_patches_name_their_sample_and_patch():
    """With three patches the noise dimension has 2 n entries, patch-major: entry
    ``j n + i`` is noise patch ``j + 1`` of sample ``i``, and the patch names follow."""
    cfg = CONFIG.replace(n_patches=3, n_seeds=1, steps=5)
    ds = run(cfg).to_xarray()
    n = cfg.n
    assert ds.sizes["noise_patch"] == 2 * n
    np.testing.assert_array_equal(ds["noise_sample"].values, np.r_[np.arange(n), np.arange(n)])
    np.testing.assert_array_equal(ds["noise_index"].values, np.repeat([1, 2], n))
    assert list(ds["patch_key"].values) == ["signal", "noise1", "noise2"]
