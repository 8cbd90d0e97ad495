"""Recorded history of a batch of runs, and its on-disk form.

A run directory holds ``config.json`` (the full config), ``history.npz`` (the arrays
below, loadable with ``allow_pickle=False``) and figures. ``analysis/`` works from
these files alone.

Recorded arrays (``T`` recorded steps, ``R`` runs; section-4 names of ``SETTING.md``):

================= ================ ==================================================
name              shape            meaning
================= ================ ==================================================
step              (T,)             training step of each record (state before update)
wall_time         (T,)             seconds since training started
train_loss        (T, R)           ``L`` on the training set
train_error       (T, R)           fraction of training samples with ``y f <= 0``
test_loss         (T, R)           logistic loss on the held-out test set
test_error        (T, R)           fraction of test samples with ``y f <= 0``
test_margin_mean  (T, R)           mean of ``y f`` over the test set
test_margin_std   (T, R)           standard deviation of ``y f`` over the test set
margin            (T, R, n)        training margins ``y_i f(X_i)``
lprime            (T, R, n)        loss derivatives ``l'_i``
Vs                (T, R)           mean value signal ``<vbar, mu>``
Vn                (T, R, n)        mean value noise ``<vbar, y_i xi_i>``
Qs, Ks            (T, R, m_k)      query / key signal ``<w_{Q,s}, mu>``, ``<w_{K,s}, mu>``
Qn, Kn            (T, R, m_k, n)   query / key noise ``<w_{Q,s}, y_i xi_i>``, ...
softmax           (T, R, n, 2, 2)  ``s_{i,lk}``; index 0 = signal patch, 1 = noise patch
================= ================ ==================================================

Per-run arrays (no ``T`` axis):

==================== ========== ===================================================
seeds                (R,)       seed of each run
y, y_clean           (R, n)     observed labels / labels carried by the signal
xi_l1, xi_l2         (R, n)     ``||xi_i||_1``, ``||xi_i||_2``
signal_position      (R, n)     patch index of the signal (0 or 1)
shared_coordinates   (R, n)     noise coordinates a sample shares with another
underflow_step       (R, n)     first step with ``l'_i == 0`` exactly (-1: never)
test_overlap_fraction (R,)      fraction of test noise coordinates that are trained
==================== ========== ===================================================
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import SimulationConfig
from .io import atomic_write_with

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.npz"

RECORDED = ("step", "wall_time", "train_loss", "train_error", "test_loss", "test_error",
            "test_margin_mean", "test_margin_std", "margin", "lprime",
            "Vs", "Vn", "Qs", "Ks", "Qn", "Kn", "softmax")
PER_RUN = ("seeds", "y", "y_clean", "xi_l1", "xi_l2", "signal_position",
           "shared_coordinates", "underflow_step", "test_overlap_fraction")


def allocate_recorded(config: SimulationConfig, T: int) -> dict[str, np.ndarray]:
    """Empty buffers for the ``RECORDED`` arrays but ``step`` (``T`` records of
    ``config.n_seeds`` runs), shapes as in the module table; ``wall_time`` starts at 0."""
    R, n, m_k = config.n_seeds, config.n, config.m_k
    shapes = {"wall_time": (T,), "train_loss": (T, R), "train_error": (T, R),
              "test_loss": (T, R), "test_error": (T, R), "test_margin_mean": (T, R),
              "test_margin_std": (T, R), "margin": (T, R, n), "lprime": (T, R, n),
              "Vs": (T, R), "Vn": (T, R, n), "Qs": (T, R, m_k), "Ks": (T, R, m_k),
              "Qn": (T, R, m_k, n), "Kn": (T, R, m_k, n), "softmax": (T, R, n, 2, 2)}
    buf = {name: np.empty(shape) for name, shape in shapes.items()}
    buf["wall_time"][:] = 0.0
    return buf


@dataclass
class History:
    """The config of a batch of runs and its recorded arrays (see module doc)."""

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
            if name in ("step", "wall_time"):
                out[name] = a
            elif name in PER_RUN:
                out[name] = a[r:r + 1]
            else:
                out[name] = a[:, r:r + 1]
        return History(self.config.replace(seed=int(self.arrays["seeds"][r]), n_seeds=1), out)

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``history.npz`` into ``run_dir`` atomically."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(run_dir / CONFIG_FILE)
        atomic_write_with(run_dir / HISTORY_FILE,
                          lambda fh: np.savez_compressed(fh, **self.arrays))
        return run_dir

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "History":
        """Read a run directory written by :meth:`save` (no pickle)."""
        run_dir = Path(run_dir)
        for name in (CONFIG_FILE, HISTORY_FILE):
            if not (run_dir / name).is_file():
                raise FileNotFoundError(f"{run_dir} is not a run directory: {name} is missing")
        config = SimulationConfig.load(run_dir / CONFIG_FILE)
        with np.load(run_dir / HISTORY_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return cls(config, arrays)

    def to_bytes(self) -> bytes:
        """The ``.npz`` bytes of the arrays (for hashing and comparisons)."""
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)
        return buf.getvalue()
