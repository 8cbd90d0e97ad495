"""The recorded history of a batch of runs: its one schema, the recorder that fills
it, and its on-disk form.

:data:`SCHEMA` declares every array once (name, shape in the dimension names of
:mod:`simulator.config`, dtype, meaning). The recorder of both engines, the history
file, the loader's shape checks, the hand-built histories of the tests
(:func:`analysis.synthetic.make_history`) and the docs (:func:`schema_table`) all
take it from there. Every field means the same in both engines.

A run directory holds ``config.json`` (the full config), ``history.npz`` (the arrays,
loadable with ``allow_pickle=False``) and figures. ``analysis/`` works from these
files alone.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .config import SimulationConfig

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.npz"


class NonFiniteError(FloatingPointError):
    """A non-finite value appeared during training (the message names the step)."""


class Field(NamedTuple):
    """One array of a history."""

    name: str
    dims: tuple[str, ...]   # dimension names; "T" first for recorded arrays
    dtype: str
    meaning: str

    @property
    def recorded(self) -> bool:
        """Recorded at every recorded step (leading ``T`` axis) rather than once per run."""
        return self.dims[:1] == ("T",)


SCHEMA: tuple[Field, ...] = (
    Field("step", ("T",), "int64", "training step of each record (the state before that step's update)"),
    Field("wall_time", ("T",), "float64", "seconds since training started"),
    Field("train_loss", ("T", "R"), "float64", "training loss L"),
    Field("train_error", ("T", "R"), "float64", "fraction of training samples with y f <= 0"),
    Field("test_loss", ("T", "R"), "float64", "logistic loss on the held-out test set"),
    Field("test_error", ("T", "R"), "float64", "fraction of test samples with y f <= 0"),
    Field("test_margin_mean", ("T", "R"), "float64", "mean of y f over the test set"),
    Field("test_margin_std", ("T", "R"), "float64", "standard deviation of y f over the test set"),
    Field("margin", ("T", "R", "n"), "float64", "training margins y_i f(X_i)"),
    Field("lprime", ("T", "R", "n"), "float64", "loss derivatives l'_i = -1 / (1 + exp(y_i f_i))"),
    Field("batch", ("T", "R", "n"), "bool",
          "sample i is in the mini-batch of the update from this step (all True: full batch)"),
    Field("Vs", ("T", "R"), "float64", "mean value signal <vbar, mu>"),
    Field("Vn", ("T", "R", "noise"), "float64", "mean value noise <vbar, y_i xi_ij>"),
    Field("Qs", ("T", "R", "m_k"), "float64", "query signal <w_{Q,s}, mu>"),
    Field("Ks", ("T", "R", "m_k"), "float64", "key signal <w_{K,s}, mu>"),
    Field("Qn", ("T", "R", "m_k", "noise"), "float64", "query noise <w_{Q,s}, y_i xi_ij>"),
    Field("Kn", ("T", "R", "m_k", "noise"), "float64", "key noise <w_{K,s}, y_i xi_ij>"),
    Field("softmax", ("T", "R", "n", "L", "L"), "float64",
          "s_{i,lk}, query patch l on key patch k; index 0 = signal patch, j = noise patch j"),
    Field("seeds", ("R",), "int64", "seed of each run"),
    Field("y", ("R", "n"), "float64", "observed labels"),
    Field("y_clean", ("R", "n"), "float64", "labels carried by the signal patch"),
    Field("xi_l1", ("R", "noise"), "float64", "||xi_ij||_1"),
    Field("xi_l2", ("R", "noise"), "float64", "||xi_ij||_2"),
    Field("signal_position", ("R", "n"), "int64", "patch index of the signal (0 .. L - 1)"),
    Field("shared_coordinates", ("R", "noise"), "int64",
          "coordinates noise patch (i, j) shares with another noise patch"),
    Field("underflow_step", ("R", "n"), "int64", "first step with l'_i == 0 exactly in float64 (-1: never)"),
    Field("test_overlap_fraction", ("R",), "float64",
          "fraction of the evaluated test inputs' noise coordinates that are trained "
          "(0 in the reduced engine, whose test inputs lie on fresh supports)"),
)
FIELDS: dict[str, Field] = {f.name: f for f in SCHEMA}
RECORDED = tuple(f.name for f in SCHEMA if f.recorded)
PER_RUN = tuple(f.name for f in SCHEMA if not f.recorded)


def dimensions(config: SimulationConfig, T: int) -> dict[str, int]:
    """The size of every dimension name of :data:`SCHEMA` for ``config``."""
    L = config.n_patches
    return {"T": T, "R": config.n_seeds, "n": config.n, "m_k": config.m_k, "L": L,
            "noise": config.n * (L - 1)}


def shape_of(field: Field, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(dims[d] for d in field.dims)


def schema_table() -> str:
    """The schema as a Markdown table (for the docs)."""
    lines = ["| name | shape | meaning |", "|---|---|---|"]
    lines += [f"| `{f.name}` | ({', '.join(f.dims)}) | {f.meaning} |" for f in SCHEMA]
    return "\n".join(lines)


def record_steps(steps: int, record_every: int) -> np.ndarray:
    """Recorded steps: ``0, k, 2k, ...`` and always the last step."""
    return np.union1d(np.arange(0, steps + 1, record_every, dtype=np.int64),
                      np.array([steps], dtype=np.int64))


class Recorder:
    """Buffers of every :data:`SCHEMA` array of a batch, filled run chunk by run chunk.

    An engine writes a chunk of runs ``rs`` (a slice): recorded values with
    :meth:`write` (record index ``k``, values of shape ``(R_chunk, ...)``) and
    per-run values with :meth:`write_per_run`. :meth:`history` checks that every
    value is finite (a non-finite value names its field, step and run) and returns
    the :class:`History`.
    """

    def __init__(self, config: SimulationConfig):
        self.config = config
        self.steps = record_steps(config.steps, config.record_every)
        self.dims = dimensions(config, self.steps.size)
        self.arrays = {f.name: np.zeros(shape_of(f, self.dims), dtype=f.dtype) for f in SCHEMA}
        self.arrays["step"][:] = self.steps
        self.arrays["underflow_step"][:] = -1

    def write(self, k: int | slice, rs: slice, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self.arrays[name][k, rs] = value

    def write_per_run(self, rs: slice, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self.arrays[name][rs] = value

    def history(self) -> History:
        found = first_nonfinite(self.arrays)
        if found is not None:
            f, idx = found
            a = self.arrays[f.name]
            where = (f"step {int(self.steps[idx[0]])}, run seed "
                     f"{int(self.arrays['seeds'][idx[1]])}" if f.recorded and a.ndim > 1
                     else f"run seed {int(self.arrays['seeds'][idx[0]])}")
            raise NonFiniteError(f"non-finite {f.name} ({f.meaning}) in the recorded output "
                                 f"at {where}: "
                                 f"{a[idx]}; {nonfinite_hint(self.config)}")
        return History(self.config, self.arrays)


def first_nonfinite(arrays: dict[str, np.ndarray]):
    """``(field, index)`` of the first non-finite value of a float schema array, in
    schema order, or ``None`` when every value is finite."""
    for f in SCHEMA:
        a = arrays[f.name]
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return f, tuple(np.argwhere(~np.isfinite(a))[0])
    return None


def nonfinite_hint(config: SimulationConfig) -> str:
    """The field that most likely made a value non-finite."""
    big = {"sigma_p": config.sigma_p, "mu_norm": config.mu_norm}
    name, value = max(big.items(), key=lambda kv: kv[1])
    if value > 1e50:
        return f"{name}={value:g} is beyond what float64 outputs can hold; lower {name}"
    return "lower eta or sigma_0"


@dataclass
class History:
    """The config of a batch of runs and its recorded arrays (:data:`SCHEMA`)."""

    config: SimulationConfig
    arrays: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise KeyError(f"history has no array {name!r}; it has: "
                           f"{', '.join(sorted(self.arrays))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __repr__(self) -> str:
        cfg = self.config
        return (f"History({cfg.engine} engine, {cfg.optimizer}, {self.n_runs} run(s) x "
                f"{cfg.steps} steps, {self.steps.size} records; arrays: "
                f"{', '.join(self.arrays)})")

    @property
    def steps(self) -> np.ndarray:
        return self.arrays["step"]

    @property
    def n_runs(self) -> int:
        return int(self.arrays["seeds"].shape[0])

    def run(self, r: int) -> "History":
        """The history of run ``r`` alone (still with an ``R = 1`` axis)."""
        out = {}
        for name, a in self.arrays.items():
            f = FIELDS.get(name)
            if f is None or "R" not in f.dims:
                out[name] = a
            elif f.recorded:
                out[name] = a[:, r:r + 1]
            else:
                out[name] = a[r:r + 1]
        return History(self.config.replace(seed=int(self.arrays["seeds"][r]), n_seeds=1), out)

    @classmethod
    def concat(cls, config: SimulationConfig, parts: list["History"]) -> "History":
        """One history of ``config`` from histories of its contiguous seed ranges, in
        order: every array with a run axis ``R`` is concatenated along it (as the
        schema declares), ``step`` is shared and ``wall_time`` is the slowest part's."""
        arrays = {}
        for f in SCHEMA:
            values = [p.arrays[f.name] for p in parts]
            if "R" in f.dims:
                arrays[f.name] = np.concatenate(values, axis=f.dims.index("R"))
            elif f.name == "wall_time":
                arrays[f.name] = np.max(values, axis=0)
            else:
                arrays[f.name] = values[0]
        history = cls(config, arrays)
        history.check()
        return history

    def check(self) -> None:
        """Raise ``ValueError`` (one line) unless every schema array is present with
        the shape and kind the config implies."""
        dims = dimensions(self.config, self.arrays["step"].shape[0] if "step" in self.arrays else 0)
        for f in SCHEMA:
            if f.name not in self.arrays:
                raise ValueError(f"history has no array {f.name!r}")
            a = self.arrays[f.name]
            want = shape_of(f, dims)
            if a.shape != want:
                raise ValueError(f"history array {f.name} has shape {a.shape}, but the config "
                                 f"implies {want} ({', '.join(f.dims)})")
            if a.dtype.kind not in "biuf" or (f.dtype != "float64" and a.dtype.kind == "f"):
                raise ValueError(f"history array {f.name} has dtype {a.dtype}, expected {f.dtype}")

    def save(self, run_dir: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the run directory as a whole (:func:`simulator.rundir.write_run_dir`):
        ``config.json``, ``history.npz`` and the ``extra`` files (name -> bytes or a
        writer), with a manifest of sizes and hashes written last; a reader sees the
        earlier run or this one, never a mix, and no file of an earlier run remains."""
        from .rundir import write_run_dir

        arrays = self.arrays
        files = {CONFIG_FILE: self.config.to_json() + "\n",
                 HISTORY_FILE: lambda fh: np.savez(fh, **arrays), **(extra or {})}
        write_run_dir(run_dir, files, config=self.config)
        return Path(run_dir)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "History":
        """Read a run directory written by :meth:`save` (no pickle), checked: the files
        against the manifest (size, SHA-256), the arrays against the schema (names,
        shapes the config implies, dtypes) and for finiteness. A directory without a
        manifest (written before manifests existed) is read without the file checks."""
        from .rundir import MissingManifestError, RunDirError, read_run_dir

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir} is not a run directory")
        try:
            _, raw = read_run_dir(run_dir, [CONFIG_FILE, HISTORY_FILE])
        except MissingManifestError:
            raw = {}
            for name in (CONFIG_FILE, HISTORY_FILE):
                if not (run_dir / name).is_file():
                    raise FileNotFoundError(f"{run_dir} is not a run directory: {name} is missing") from None
                raw[name] = (run_dir / name).read_bytes()
        try:
            config = SimulationConfig.from_json(raw[CONFIG_FILE].decode("utf-8"))
        except UnicodeDecodeError:
            raise RunDirError(f"{run_dir / CONFIG_FILE} is not UTF-8 text") from None
        try:
            with np.load(io.BytesIO(raw[HISTORY_FILE]), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as exc:                    # zip, npy header, pickle refusal
            raise RunDirError(f"{run_dir / HISTORY_FILE} is not a readable .npz file "
                              f"({type(exc).__name__}: {exc})".splitlines()[0]) from None
        history = cls(config, arrays)
        history.check()
        found = first_nonfinite(arrays)
        if found is not None:
            raise RunDirError(f"{run_dir / HISTORY_FILE}: {found[0].name} holds non-finite values")
        return history

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes of the arrays (for hashing and comparisons)."""
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)
        return buf.getvalue()

    def to_xarray(self):
        """This history as a labelled ``xarray.Dataset`` (:func:`simulator.labelled.to_xarray`)."""
        from .labelled import to_xarray
        return to_xarray(self)

    def save_netcdf(self, path: str | os.PathLike) -> Path:
        """Write this history as a netCDF4 file (:func:`simulator.labelled.save_netcdf`)."""
        from .labelled import save_netcdf
        return save_netcdf(self, path)
