"""The batched arrays a training run works on: data in the trained basis, initial
weights, and the held-out test inputs (``docs/theory.md`` section 8).

Only coordinate 0 (the signal) and the union of the training noise supports ever
receive a non-zero gradient, under every optimizer. The *active basis* of a run is
those coordinates, sorted; the engine trains ``W`` restricted to them, so the cost of
a step does not depend on ``d``. Runs of a batch have bases of different sizes; they
are padded to a common ``D`` with the sentinel coordinate ``d`` (zero input, zero
gradient, never moves, never touched by a test input).

Test inputs touch fresh coordinates whose weights are still their initial draws.
Their contribution to ``W x`` is computed once from the initial weights
(``test_frozen``); the few test coordinates that fall inside the basis are kept as a
sparse matrix and projected with the current weights.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import scipy.sparse as sp

from .config import SimulationConfig
from .data import NoisyDataset, draw_test_set, draw_training_set, shared_coordinate_counts
from .initialization import initial_weights
from .model import Layout


@dataclass
class TrainingProblem:
    """Everything fixed during training, batched over runs ``R``."""

    config: SimulationConfig
    layout: Layout
    seeds: np.ndarray            # (R,)
    coords: np.ndarray           # (R, D) global coordinate of each basis column
    X: np.ndarray                # (R, n, L, D) training inputs in the basis
    y: np.ndarray                # (R, n) observed labels
    W0: np.ndarray               # (R, M, D) initial weights on the basis
    train: list[NoisyDataset]    # per run
    test: list[NoisyDataset]     # per run
    test_frozen: np.ndarray      # (R, P n_test, M) W_0 xi on test coords outside the basis
    test_in_basis: list          # per run: CSR (P n_test, D) test noise inside the basis
    test_overlap_fraction: np.ndarray  # (R,) fraction of test noise coords that are trained
    test_y: np.ndarray           # (R, n_test) observed test labels
    test_signal: np.ndarray      # (R, n_test) y_clean ||mu||: signal-patch entry on coordinate 0
    test_signal_position: np.ndarray  # (R, n_test)
    # Optional, for signal patches that are not ``y ||mu|| e_0`` (real images, see
    # simulator/digits.py); None keeps the synthetic model.
    test_signal_in_basis: list | None = None  # per run: CSR (n_test, D) test signal patches
    signal_direction: np.ndarray | None = None  # (R, D) mu in the basis (default ||mu|| e_0)

    @property
    def R(self) -> int:
        return self.X.shape[0]

    @property
    def D(self) -> int:
        return self.X.shape[-1]

    @property
    def L(self) -> int:
        """Patches per input."""
        return self.X.shape[2]

    @property
    def shared_coordinates(self) -> np.ndarray:
        """(R, P n) per noise patch (patch-major, :mod:`simulator.data`), its
        coordinates shared with another noise patch."""
        return np.stack([shared_coordinate_counts(ds.support, ds.values) for ds in self.train])

    @property
    def signal_position(self) -> np.ndarray:
        """(R, n) patch index of each training sample's signal patch."""
        return self.stacked("signal_position")

    @property
    def signal_first(self) -> bool:
        """Every training sample has its signal in patch 0."""
        return bool((self.signal_position == 0).all())

    def stacked(self, name: str, which: str = "train") -> np.ndarray:
        """A per-sample dataset attribute stacked over runs, e.g. ``stacked('xi_l1')``."""
        sets = self.train if which == "train" else self.test
        return np.stack([getattr(ds, name) for ds in sets])


def active_basis(config: SimulationConfig, dataset: NoisyDataset) -> np.ndarray:
    """Sorted coordinates the engine trains for one run."""
    if config.coordinates == "all":
        return np.arange(config.d, dtype=np.int64)
    return np.union1d(np.zeros(1, dtype=np.int64), dataset.support.ravel())


def patches_in_basis(dataset: NoisyDataset, basis: np.ndarray, D: int,
                     feature_noise: float = 0.0) -> np.ndarray:
    """Dense inputs ``(n, L, D)`` of a dataset whose supports lie in ``basis``: the
    signal patch ``y_clean mu`` at its position and the noise patches
    ``xi_ij - alpha y_clean mu`` at the others (``alpha = feature_noise``;
    ``mu = ||mu|| e_0``, basis column 0)."""
    n, L = dataset.n, dataset.n_patches
    X = np.zeros((n, L, D))
    X[np.arange(n), dataset.signal_position, 0] = dataset.y_clean * dataset.mu_norm
    sample = np.tile(np.arange(n), L - 1)                  # (P n,) patch-major rows
    patch = dataset.noise_positions.T.ravel()              # (P n,) position of each
    cols = np.searchsorted(basis, dataset.support)
    X[sample[:, None], patch[:, None], cols] = dataset.values
    if feature_noise:
        X[sample, patch, 0] = -feature_noise * dataset.y_clean[sample] * dataset.mu_norm
    return X


def feature_noise_in_basis(dataset: NoisyDataset, in_basis: sp.csr_matrix,
                           feature_noise: float) -> sp.csr_matrix:
    """The test noise patches inside the basis (``P n_test`` rows) with their component
    on the signal coordinate, ``-alpha y_clean ||mu||`` on basis column 0."""
    if not feature_noise:
        return in_basis
    rows = in_basis.shape[0]
    y_clean = np.tile(dataset.y_clean, rows // dataset.n)
    signal = sp.csr_matrix((-feature_noise * y_clean * dataset.mu_norm,
                            (np.arange(rows), np.zeros(rows, dtype=np.int64))),
                           shape=in_basis.shape)
    return (in_basis + signal).tocsr()


def split_test_noise(dataset: NoisyDataset, basis: np.ndarray, D: int, seed: int,
                      config: SimulationConfig):
    """Split the test noise patches (``P n_test`` rows, patch-major) into a sparse part
    inside the basis and the frozen projection ``W_0 xi`` of the part outside it."""
    support, values = dataset.support, dataset.values
    n_rows = support.shape[0]
    pos = np.searchsorted(basis, support).clip(max=basis.size - 1)
    inside = basis[pos] == support
    rows = np.broadcast_to(np.arange(n_rows)[:, None], support.shape)
    in_basis = sp.csr_matrix((values[inside], (rows[inside], pos[inside])), shape=(n_rows, D))
    frozen = np.zeros((n_rows, config.n_weight_rows))
    if (~inside).any():
        fresh, inverse = np.unique(support[~inside], return_inverse=True)
        W_fresh = initial_weights(seed, config.n_weight_rows, fresh, config.sigma_0)  # (M, F)
        contrib = W_fresh[:, inverse] * values[~inside]                              # (M, nnz)
        np.add.at(frozen.T, (slice(None), rows[~inside]), contrib)
    return in_basis, frozen


def trained_fraction(test: NoisyDataset, train: NoisyDataset) -> float:
    """Fraction of test noise coordinates that some training input touches (the
    same whether the engine trains the active basis or all ``d`` coordinates)."""
    return np.isin(test.support, train.support).sum() / max(test.support.size, 1)


def build_problem(config: SimulationConfig) -> TrainingProblem:
    """Draw data and initial weights of every run of ``config`` (seed ``seed + r``);
    synthetic data (``data='digits'``: :func:`simulator.digits.build_digits_problem`)."""
    if config.data != "synthetic":
        raise ValueError(f"build_problem() draws synthetic data; got data={config.data!r}")
    seeds = np.array(config.seeds, dtype=np.int64)
    train = [draw_training_set(config, int(seed)) for seed in seeds]
    test = [draw_test_set(config, int(seed)) for seed in seeds]
    bases = [active_basis(config, ds) for ds in train]
    D = max(b.size for b in bases)
    coords = np.full((len(seeds), D), config.d, dtype=np.int64)   # pad with sentinel d
    for r, b in enumerate(bases):
        coords[r, :b.size] = b
    X = np.stack([patches_in_basis(ds, b, D, config.feature_noise) for ds, b in zip(train, bases)])
    W0 = np.stack([initial_weights(int(seed), config.n_weight_rows, c, config.sigma_0)
                   for seed, c in zip(seeds, coords)])
    split = [split_test_noise(ds, b, D, int(seed), config)
             for ds, b, seed in zip(test, bases, seeds)]
    return TrainingProblem(
        config=config, layout=Layout.of(config), seeds=seeds, coords=coords, X=X,
        y=np.stack([ds.y for ds in train]), W0=W0, train=train, test=test,
        test_frozen=np.stack([s[1] for s in split]),
        test_in_basis=[feature_noise_in_basis(ds, sp_[0], config.feature_noise)
                       for ds, sp_ in zip(test, split)],
        test_overlap_fraction=np.array([trained_fraction(te, tr) for te, tr in zip(test, train)]),
        test_y=np.stack([ds.y for ds in test]),
        test_signal=np.stack([ds.y_clean for ds in test]) * config.mu_norm,
        test_signal_position=np.stack([ds.signal_position for ds in test]))
