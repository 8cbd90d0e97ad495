"""Data model: a signal patch and sparse noise patches (``docs/theory.md`` section 1).

A sample is ``X = [x1, x2]`` with ``x1 = y_clean * mu`` (signal patch),
``x2 = xi`` (noise patch), ``mu = ||mu|| e_1`` (coordinate 0 here, 0-based) and
``xi`` supported on ``s`` coordinates drawn uniformly without replacement from
``{1, ..., d - 1}``, each entry ``N(0, sigma_p^2)``. With ``n_patches = L > 2`` a
sample has ``P = L - 1`` noise patches ``xi_i1 .. xi_iP``, each with its own support.

Noise patches are stored patch-major: row ``j n + i`` of ``support`` and ``values``
is noise patch ``j`` (0-based) of sample ``i``; with two patches the rows are the
samples.

Noise is stored as supports + values, never as a dense ``n x d`` array, unless the
data really is dense (``noise='dense'``).

Variants (config fields):

* ``noise='dense'``: every coordinate ``1 .. d-1`` is ``N(0, sigma_p^2)``.
* ``noise='none'`` (or ``sigma_p = 0``): noiseless inputs.
* ``label_flip=p``: the observed label is ``-y_clean`` with probability ``p``;
  the signal patch keeps ``y_clean``.
* ``signal_position='random'``: the signal's position is uniform among the ``L``
  patches; the noise patches fill the other positions in order.
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
    support : (P n, s) int64
        Noise coordinates of each noise patch (row ``j n + i``: patch ``j`` of sample
        ``i``), sorted, in ``1 .. d - 1``.
    values : (P n, s) float64
        Noise entries on ``support``.
    signal_position : (n,) int64
        Patch index (``0 .. L - 1``) of the signal patch.
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
    def n_patches(self) -> int:
        """``L``: the signal patch and ``P = L - 1`` noise patches."""
        return self.support.shape[0] // self.n + 1

    @property
    def noise_positions(self) -> np.ndarray:
        """(n, P) patch index of each noise patch: the positions other than the
        signal's, in order."""
        return noise_positions(self.signal_position, self.n_patches)

    @property
    def xi_l1(self) -> np.ndarray:
        """``||xi_ij||_1`` of every noise patch, shape (P n,)."""
        return np.abs(self.values).sum(axis=1)

    @property
    def xi_l2(self) -> np.ndarray:
        """``||xi_ij||_2`` of every noise patch, shape (P n,)."""
        return np.sqrt(np.square(self.values).sum(axis=1))

    def shared_coordinates(self) -> np.ndarray:
        """Number of each noise patch's coordinates that another noise patch (of any
        sample) also uses, shape (P n,). Zero everywhere means disjoint supports."""
        return shared_coordinate_counts(self.support, self.values)


def noise_positions(signal_position: np.ndarray, L: int) -> np.ndarray:
    """``(..., L - 1)``: the patch indices other than ``signal_position`` (...), in order."""
    j = np.arange(L - 1)
    return j + (j >= np.asarray(signal_position)[..., None])


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
    """Draw ``n`` samples of the data model of ``config`` with ``rng`` (their ``P n``
    noise patches patch-major; with two patches the draws of the first version)."""
    d, L = config.d, config.n_patches
    rows = (L - 1) * n                                        # noise patches
    y_clean = rng.choice(np.array([-1.0, 1.0]), size=n)
    flips = rng.random(n) < config.label_flip
    y = np.where(flips, -y_clean, y_clean)
    if config.noise == "dense":
        support = np.broadcast_to(np.arange(1, d, dtype=np.int64), (rows, d - 1))
        values = config.sigma_p * rng.standard_normal((rows, d - 1))
    elif config.noise == "none":
        support = np.zeros((rows, 0), dtype=np.int64)
        values = np.zeros((rows, 0))
    else:
        support = _random_supports(rng, rows, config.s, d)
        values = config.sigma_p * rng.standard_normal((rows, config.s))
    # drawn last, so 'random' and 'first' share labels and noise for the same seed
    if config.signal_position == "random":
        signal_position = rng.integers(0, L, size=n)
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
