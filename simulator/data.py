"""Data model: a signal patch and a sparse noise patch (``docs/theory.md`` section 1).

A sample is ``X = [x1, x2]`` with ``x1 = y_clean * mu`` (signal patch),
``x2 = xi`` (noise patch), ``mu = ||mu|| e_1`` (coordinate 0 here, 0-based) and
``xi`` supported on ``s`` coordinates drawn uniformly without replacement from
``{1, ..., d - 1}``, each entry ``N(0, sigma_p^2)``.

Noise is stored as supports + values, never as a dense ``n x d`` array, unless the
data really is dense (``noise='dense'``).

Variants (config fields):

* ``noise='dense'``: every coordinate ``1 .. d-1`` is ``N(0, sigma_p^2)``.
* ``noise='none'`` (or ``sigma_p = 0``): noiseless inputs.
* ``label_flip=p``: the observed label is ``-y_clean`` with probability ``p``;
  the signal patch keeps ``y_clean``.
* ``signal_position='random'``: the signal is patch 2 with probability 1/2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SimulationConfig

DATA_STREAM = 1
TEST_STREAM = 2


@dataclass(frozen=True)
class NoisyDataset:
    """``n`` samples of the signal-noise model for one run.

    Attributes
    ----------
    y : (n,) float64
        Observed labels in {-1, +1} (what the loss sees).
    y_clean : (n,) float64
        Labels carried by the signal patch (``x1 = y_clean mu``).
    support : (n, s) int64
        Noise coordinates of each sample, sorted, in ``1 .. d - 1``.
    values : (n, s) float64
        Noise entries on ``support``.
    signal_position : (n,) int64
        Patch index (0 or 1) of the signal patch.
    mu_norm : float
        ``||mu||``.
    d : int
        Input dimension.
    """

    y: np.ndarray
    y_clean: np.ndarray
    support: np.ndarray
    values: np.ndarray
    signal_position: np.ndarray
    mu_norm: float
    d: int

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def xi_l1(self) -> np.ndarray:
        """``||xi_i||_1``, shape (n,)."""
        return np.abs(self.values).sum(axis=1)

    @property
    def xi_l2(self) -> np.ndarray:
        """``||xi_i||_2``, shape (n,)."""
        return np.sqrt(np.square(self.values).sum(axis=1))

    def shared_coordinates(self) -> np.ndarray:
        """Number of each sample's noise coordinates that another sample also uses,
        shape (n,). Zero for every sample means disjoint supports."""
        return shared_coordinate_counts(self.support, self.values)


def shared_coordinate_counts(support: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per sample, how many of its (non-zero) noise coordinates another sample
    also touches. ``support``, ``values``: (n, s)."""
    if support.size == 0:
        return np.zeros(support.shape[0], dtype=np.int64)
    used = np.where(values != 0, support, -1)
    coords, counts = np.unique(used[used >= 0], return_counts=True)
    shared = coords[counts > 1]
    return np.isin(used, shared).sum(axis=1).astype(np.int64)


def expected_shared_coordinates(n: int, s: int, d: int) -> float:
    """Expected number of coordinates used by two or more of ``n`` supports of size
    ``s`` drawn from ``d - 1`` coordinates (about ``n (n - 1) s^2 / (2 d)`` when small)."""
    p = s / (d - 1)
    return (d - 1) * (1.0 - (1.0 - p) ** n - n * p * (1.0 - p) ** (n - 1))


def _random_supports(rng: np.random.Generator, n: int, s: int, d: int) -> np.ndarray:
    """``n`` sorted supports of ``s`` distinct coordinates from ``1 .. d - 1``."""
    support = np.empty((n, s), dtype=np.int64)
    for i in range(n):  # data generation only; Floyd sampling costs O(s), not O(d)
        support[i] = np.sort(rng.choice(d - 1, size=s, replace=False)) + 1
    return support


def generate_dataset(config: SimulationConfig, rng: np.random.Generator, n: int) -> NoisyDataset:
    """Draw ``n`` samples of the data model of ``config`` with ``rng``."""
    d = config.d
    y_clean = rng.choice(np.array([-1.0, 1.0]), size=n)
    flips = rng.random(n) < config.label_flip
    y = np.where(flips, -y_clean, y_clean)
    if config.noise == "dense":
        support = np.broadcast_to(np.arange(1, d, dtype=np.int64), (n, d - 1))
        values = config.sigma_p * rng.standard_normal((n, d - 1))
    elif config.noise == "none":
        support = np.zeros((n, 0), dtype=np.int64)
        values = np.zeros((n, 0))
    else:
        support = _random_supports(rng, n, config.s, d)
        values = config.sigma_p * rng.standard_normal((n, config.s))
    # drawn last, so 'random' and 'first' share labels and noise for the same seed
    if config.signal_position == "random":
        signal_position = rng.integers(0, 2, size=n)
    else:
        signal_position = np.zeros(n, dtype=np.int64)
    return NoisyDataset(y=y, y_clean=y_clean, support=np.ascontiguousarray(support),
                        values=values, signal_position=signal_position.astype(np.int64),
                        mu_norm=config.mu_norm, d=d)


def draw_training_set(config: SimulationConfig, seed: int) -> NoisyDataset:
    """The training set of the run with ``seed`` (independent of ``n_test``)."""
    return generate_dataset(config, np.random.default_rng([seed, DATA_STREAM]), config.n)


def draw_test_set(config: SimulationConfig, seed: int) -> NoisyDataset:
    """The held-out test set of the run with ``seed`` (fresh draws)."""
    return generate_dataset(config, np.random.default_rng([seed, TEST_STREAM]), config.n_test)


#: Weight-row offset of the mini-batch keys in the counter-based generator (far from
#: every weight row, so batches and initial weights are independent).
BATCH_ROW = 2 ** 40


def minibatch(seeds: np.ndarray, step: int, n: int, batch_size: int) -> np.ndarray:
    """The samples of step ``step``'s mini-batch for each run, ``(R, n)`` bool: the
    ``batch_size`` samples with the smallest keys ``N(0, 1)[seed, step, i]`` (counter-based,
    :func:`~simulator.initialization.coordinate_normals`), so a batch is drawn without
    replacement, a run's batches do not depend on the other runs of a batch, and the
    same seed gives the same batches."""
    from .initialization import coordinate_normals

    out = np.zeros((len(seeds), n), dtype=bool)
    rows = np.array([BATCH_ROW + step])
    for r, seed in enumerate(seeds):
        keys = coordinate_normals(int(seed), rows, np.arange(n))[0]          # (n,)
        out[r, np.argpartition(keys, batch_size - 1)[:batch_size]] = True
    return out
