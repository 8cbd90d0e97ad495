"""A history as labelled arrays: an ``xarray.Dataset`` with named dimensions, and its
netCDF file.

The schema's dimension names (:data:`simulator.history.SCHEMA`) become named
dimensions with coordinates:

========= =============== =====================================================
schema    dataset         coordinate
========= =============== =====================================================
``T``     ``step``        the recorded step numbers (the ``step`` array)
``R``     ``run``         the seed of each run (the ``seeds`` array)
``n``     ``sample``      ``0 .. n - 1``
``m_k``   ``neuron``      ``0 .. m_k - 1``
``L``     ``patch``       ``"signal", "noise"`` (``"signal", "noise1", ...`` for more
                          patches); the softmax ``s_{i,lk}`` has the two dims
                          ``patch_query`` (``l``) and ``patch_key`` (``k``)
``noise`` ``noise_patch`` ``0 .. n (L - 1) - 1``, with the coordinates
                          ``noise_sample`` (``i``) and ``noise_index`` (``j``, from 1)
========= =============== =====================================================

Every other schema array is a data variable with its schema meaning as the
``meaning`` attribute; ``step`` and ``seeds`` are the coordinates above. The config
is in the dataset's attributes, once as exact JSON (``config_json``, what
:func:`load_netcdf` reads) and once field by field for reading (fields that are
``None``, the optimizer's default, are left out: netCDF has no null attribute).

File format: netCDF4 (HDF5) through ``h5netcdf``, compressed. netCDF4 keeps the
schema's ``int64`` arrays (step numbers, seeds, underflow steps) exact; netCDF3
(xarray's ``scipy`` engine) has no 64-bit integers and would narrow them to int32,
refusing seeds from ``2**31`` on, which the config allows. ``h5py`` ships wheels with
HDF5 inside, so ``pip install 'signgd-transformer-sim[labelled]'`` needs no system
library.

>>> ds = history.to_xarray()                                  # doctest: +SKIP
>>> ds["Qn"].sel(run=0, neuron=3).isel(step=-1)               # doctest: +SKIP
>>> history.save_netcdf("run.nc"); load_netcdf("run.nc")      # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .config import SimulationConfig
from .history import FIELDS, SCHEMA, History
from .io import atomic_write_path

if TYPE_CHECKING:   # pragma: no cover
    import xarray

DIM_NAMES = {"T": "step", "R": "run", "n": "sample", "m_k": "neuron", "L": "patch",
             "noise": "noise_patch"}
"""Schema dimension -> dataset dimension."""
SOFTMAX_DIMS = ("step", "run", "sample", "patch_query", "patch_key")


def patch_names(L: int) -> list[str]:
    """Names of the patches in semantic order: ``signal, noise`` (two patches) or
    ``signal, noise1, ..., noise{L-1}``."""
    return ["signal", "noise"] if L == 2 else ["signal"] + [f"noise{j}" for j in range(1, L)]

COORDINATE_ARRAYS = {"step": "step", "seeds": "run"}
"""Schema arrays that become the coordinates of a dimension."""
ENGINE = "h5netcdf"
INSTALL_HINT = "pip install 'signgd-transformer-sim[labelled]'"


def _xarray():
    try:
        import xarray
    except ImportError:
        raise ImportError(f"labelled histories need xarray: {INSTALL_HINT}") from None
    return xarray


def dataset_dims(name: str, array: np.ndarray) -> tuple[str, ...]:
    """The dataset dimension names of history array ``name``."""
    if name == "softmax":
        return SOFTMAX_DIMS
    field = FIELDS.get(name)
    if field is None:        # an array outside the schema: generic names
        return tuple(f"{name}_dim{k}" for k in range(array.ndim))
    return tuple(DIM_NAMES[d] for d in field.dims)


def to_xarray(history: History) -> "xarray.Dataset":
    """``history`` as an ``xarray.Dataset`` (dims and attributes: module docstring)."""
    xr = _xarray()
    arrays = history.arrays
    config = history.config
    coords = {
        "step": ("step", np.asarray(arrays["step"]), {"meaning": FIELDS["step"].meaning}),
        "run": ("run", np.asarray(arrays["seeds"]), {"meaning": FIELDS["seeds"].meaning}),
        "sample": ("sample", np.arange(arrays["y"].shape[-1])),
        "neuron": ("neuron", np.arange(arrays["Qs"].shape[-1])),
        "patch": ("patch", patch_names(config.n_patches)),
        "patch_query": ("patch_query", patch_names(config.n_patches)),
        "patch_key": ("patch_key", patch_names(config.n_patches)),
    }
    n, P = config.n, config.n_patches - 1          # noise patch j n + i: patch j of sample i
    coords["noise_patch"] = ("noise_patch", np.arange(n * P))
    coords["noise_sample"] = ("noise_patch", np.tile(np.arange(n), P),
                              {"meaning": "the sample the noise patch belongs to"})
    coords["noise_index"] = ("noise_patch", np.repeat(np.arange(1, P + 1), n),
                             {"meaning": "which of the sample's noise patches (1 .. L - 1)"})
    data_vars = {}
    for name, array in arrays.items():
        if name in COORDINATE_ARRAYS:
            continue
        field = FIELDS.get(name)
        attrs = {"meaning": field.meaning, "schema_dims": " ".join(field.dims)} if field else {}
        data_vars[name] = (dataset_dims(name, array), np.asarray(array), attrs)
    attrs = {"title": f"SignGD transformer simulation ({config.engine} engine, {config.optimizer})",
             "config_json": config.to_json()}
    attrs.update({k: v for k, v in config.to_dict().items() if v is not None})
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    # keep only the coordinates some variable uses (patch_query/key only with softmax)
    used = {d for v in ds.data_vars.values() for d in v.dims} | {"step", "run"}
    unused = [c for c in ("sample", "neuron", "patch", "patch_query", "patch_key") if c not in used]
    if "noise_patch" not in used:
        unused += ["noise_patch", "noise_sample", "noise_index"]
    return ds.drop_vars(unused)


def save_netcdf(history: History, path: str | os.PathLike) -> Path:
    """Write ``history`` to ``path`` as a compressed netCDF4 file, atomically."""
    ds = to_xarray(history)
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars
                if ds[name].ndim > 0 and ds[name].size > 0}
    path = Path(path)
    try:
        import h5netcdf  # noqa: F401
    except ImportError:
        raise ImportError(f"netCDF files need h5netcdf: {INSTALL_HINT}") from None
    atomic_write_path(path, lambda tmp: ds.to_netcdf(tmp, engine=ENGINE, encoding=encoding))
    return path


def load_netcdf(path: str | os.PathLike) -> History:
    """The :class:`~simulator.history.History` of a file written by :func:`save_netcdf`,
    checked against the schema (same arrays, dtypes and config as saved)."""
    xr = _xarray()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no netCDF file {path}")
    with xr.open_dataset(path, engine=ENGINE) as ds:
        ds = ds.load()
    if "config_json" not in ds.attrs:
        raise ValueError(f"{path} is not a history file: it has no config_json attribute")
    config = SimulationConfig.from_json(ds.attrs["config_json"])
    arrays = {"step": ds["step"].values, "seeds": ds["run"].values}
    for name, var in ds.data_vars.items():
        arrays[name] = var.values
    for field in SCHEMA:      # schema order, schema dtypes
        if field.name in arrays:
            arrays[field.name] = np.asarray(arrays[field.name], dtype=field.dtype)
    ordered = {f.name: arrays.pop(f.name) for f in SCHEMA if f.name in arrays}
    ordered.update(arrays)
    history = History(config, ordered)
    history.check()
    return history
