"""Real images in the two-patch setting: scikit-learn's bundled 8x8 handwritten digits.

The paper backs its theory with noisy real images. This module builds the same kind
of input from a dataset that ships inside scikit-learn (no download): a binary task
between two digit classes, the image as the signal patch and a noise patch of chosen
level and sparsity. It needs the optional extra ``digits``
(``pip install "signgd-transformer-sim[digits]"``).

Construction of one run (seed ``seed``)
---------------------------------------
* **Split.** Each class's images are shuffled with ``default_rng([seed, 11])``; the
  first ``n_train / 2`` of each class are the training set, the next ``n_test / 2``
  the held-out test set. Classes are balanced exactly and the two sets are disjoint.
  Label ``y = +1`` for ``classes[0]`` and ``y = -1`` for ``classes[1]``.
* **Signal patch** ``x_1`` (coordinates ``0 .. 63``). A flattened image ``a`` (pixels
  0..16) is centered at the midpoint ``c = (m_+ + m_-) / 2`` of the two training
  class means and scaled to a fixed norm: ``x_1 = image_norm (a - c) / ||a - c||``.
  Centering makes ``E[x_1 | y] ~ y mu`` with ``mu = (m'_+ - m'_-) / 2`` (the
  half class-mean difference of the normalized training images), which is the
  structure ``x_1 = y mu`` of ``docs/theory.md`` section 1 plus within-class variation.
  ``mu`` is stored as the run's *signal direction*: the section-4 signal quantities
  of a digits run are projections on it (``Vs = <vbar, mu>``, ``Qs_s = <w_{Q,s}, mu>``).
* **Noise patch** ``x_2 = xi`` (coordinates ``64 .. 64 + noise_dim - 1``, disjoint
  from the pixels). ``sparse``: ``s`` coordinates drawn uniformly without
  replacement, entries ``N(0, sigma_p^2)``, exactly the data model;
  ``dense``: every noise coordinate ``N(0, sigma_p^2)``; ``none`` (or
  ``sigma_p = 0``): ``xi = 0``. Noise has its own streams (``[seed, 12]`` train,
  ``[seed, 13]`` test) and is ``sigma_p`` times fixed standard normals, so runs at
  different noise levels share the split, the supports and the noise directions
  (common random numbers: a sweep over ``sigma_p`` changes only the level).
  Test noise is fresh, as in section 1.

Why it keeps the setting's structure: the signal and the noise live in disjoint
coordinates and patches, so every formula of ``docs/theory.md`` sections 2-4 and 8 applies
as is: pixels play the role of coordinate 1 (now 64 coordinates), and coordinates
that no training input touches keep their initial weights, which the counter-based
:func:`~simulator.initialization.initial_weights` reproduces for the fresh test
coordinates. What differs from the synthetic model: the signal patch is not exactly
``y mu`` (images vary within a class), so the exact one-step laws of section 5 and
the reduced engine of section 9 do not apply; the full engine trains it.

The result is a :class:`~simulator.problem.TrainingProblem` that
:func:`simulator.training.train` runs unchanged (``train(problem.config,
problem=problem)``, or :func:`train_digits`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .config import ConfigError, SimulationConfig
from .data import NoisyDataset
from .initialization import initial_weights
from .model import Layout
from .problem import TrainingProblem, split_test_noise, trained_fraction

PIXELS = 64                        # 8 x 8 images, coordinates 0 .. 63
DIGITS_NOISE_KINDS = ("sparse", "dense", "none")
INSTALL_HINT = 'pip install "signgd-transformer-sim[digits]"'
SPLIT_STREAM, TRAIN_NOISE_STREAM, TEST_NOISE_STREAM = 11, 12, 13
SPARSE_NOISE_DIM = 1_000_000
"""Default noise coordinates for sparse noise: with ``n = 100``, ``s = 20`` about
``n (n - 1) s^2 / (2 noise_dim) = 2`` coordinates are shared between training samples, and
training costs nothing extra (only touched coordinates are trained)."""
DENSE_NOISE_DIM = 1_000
"""Default noise coordinates for dense noise: every one of them is trained."""
MAX_DENSE_NOISE_DIM = 20_000


class DigitsUnavailableError(ImportError):
    """scikit-learn (the optional extra ``digits``) is not installed."""


@dataclass(frozen=True)
class DigitsData:
    """The digits task and its noise (the model and optimizer live in
    :class:`~simulator.config.SimulationConfig`). Validated when built."""

    classes: tuple[int, int] = (3, 8)
    """The two digits of the binary task: ``classes[0]`` is ``y = +1``. 3 vs 8 is one
    of the harder pairs, so the accuracy at zero noise is informative."""
    n_train: int = 100
    """Training images, half from each class (even)."""
    n_test: int = 200
    """Held-out test images, half from each class (even), never used in training."""
    noise: str = "sparse"
    """``sparse`` (the data model), ``dense`` or ``none``."""
    sigma_p: float = 0.0
    """Noise level: standard deviation of each non-zero noise entry."""
    s: int = 20
    """Sparsity of sparse noise: non-zero noise coordinates per image."""
    noise_dim: int | None = None
    """Noise coordinates (``d = 64 + noise_dim``); default ``1e6`` for sparse
    noise (disjoint supports, as in the theory), ``1000`` for dense noise."""
    image_norm: float = 1.0
    """``||x_1||_2`` of every signal patch."""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def d(self) -> int:
        """Input dimension: pixels then noise coordinates."""
        return PIXELS + self.noise_dim

    @property
    def noise_per_sample(self) -> int:
        """Non-zero noise coordinates per image (0 without noise)."""
        if self.noise == "none" or self.sigma_p == 0.0:
            return 0
        return self.s if self.noise == "sparse" else self.noise_dim

    def replace(self, **changes: Any) -> "DigitsData":
        """A copy with some fields changed (validated again). Changing ``noise``
        without giving ``noise_dim`` resets ``noise_dim`` to the new kind's default."""
        if changes.get("noise", self.noise) != self.noise and "noise_dim" not in changes:
            changes["noise_dim"] = None      # the default noise_dim of the new kind
        return dataclasses.replace(self, **changes)


def _validate(data: DigitsData) -> None:
    classes = data.classes
    ok = (isinstance(classes, (tuple, list)) and len(classes) == 2
          and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in classes))
    if not ok or not all(0 <= c <= 9 for c in classes) or classes[0] == classes[1]:
        raise ConfigError(f"classes must be two different digits in 0..9, got {classes!r}")
    object.__setattr__(data, "classes", (int(classes[0]), int(classes[1])))
    for name in ("n_train", "n_test"):
        value = getattr(data, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                or value < 2 or value % 2:
            raise ConfigError(f"{name} must be an even integer >= 2 (half per class), got {value!r}")
    if data.noise not in DIGITS_NOISE_KINDS:
        raise ConfigError(f"noise must be one of {', '.join(DIGITS_NOISE_KINDS)}; got {data.noise!r}")
    for name, positive in (("sigma_p", False), ("image_norm", True)):
        value = getattr(data, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "(0, inf)" if positive else "[0, inf)"
            raise ConfigError(f"{name} must be finite and in {bound}, got {value!r}")
        object.__setattr__(data, name, float(value))
    if data.noise_dim is None:
        object.__setattr__(data, "noise_dim",
                           DENSE_NOISE_DIM if data.noise == "dense" else SPARSE_NOISE_DIM)
    hi = MAX_DENSE_NOISE_DIM if data.noise == "dense" else 2**40
    if isinstance(data.noise_dim, bool) or not isinstance(data.noise_dim, (int, np.integer)) \
            or not 1 <= data.noise_dim <= hi:
        why = " for dense noise (every noise coordinate is trained)" if data.noise == "dense" else ""
        raise ConfigError(f"noise_dim must be an integer between 1 and {hi}{why}, got {data.noise_dim!r}")
    if isinstance(data.s, bool) or not isinstance(data.s, (int, np.integer)) \
            or not 1 <= data.s <= data.noise_dim:
        raise ConfigError(f"s must be an integer between 1 and noise_dim = {data.noise_dim}, got {data.s!r}")


# ---------------------------------------------------------------------------
# the images
# ---------------------------------------------------------------------------

def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All bundled 8x8 digits: images ``(N, 64)`` with pixels 0..16 and labels ``(N,)``.

    Raises
    ------
    DigitsUnavailableError
        When scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DigitsUnavailableError(
            f"the digits data ships with scikit-learn, which is not installed: {INSTALL_HINT}") from None
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


@dataclass(frozen=True)
class DigitsRun:
    """The data of one run: patches before they are placed in a basis.

    Attributes
    ----------
    x1 : (n, 64)            training signal patches (centered, norm ``image_norm``)
    y : (n,)                training labels in {-1, +1}
    noise : NoisyDataset    training noise patches (coordinates ``64 .. d - 1``)
    test_x1 : (n_test, 64)  held-out signal patches (same centering and scaling)
    test_y : (n_test,)
    test_noise : NoisyDataset  fresh test noise
    mu : (64,)              signal direction: half the class-mean difference of ``x1``
    index, test_index       rows of the bundled dataset used (disjoint)
    """

    x1: np.ndarray
    y: np.ndarray
    noise: NoisyDataset
    test_x1: np.ndarray
    test_y: np.ndarray
    test_noise: NoisyDataset
    mu: np.ndarray
    index: np.ndarray
    test_index: np.ndarray


def _split(labels: np.ndarray, data: DigitsData, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced, disjoint train/test rows of the two classes (train: class 0 block
    then class 1 block; same for test)."""
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    half_train, half_test = data.n_train // 2, data.n_test // 2
    train, test = [], []
    for c in data.classes:
        rows = np.flatnonzero(labels == c)
        if rows.size < half_train + half_test:
            raise ConfigError(
                f"n_train/2 + n_test/2 = {half_train + half_test} exceeds the {rows.size} "
                f"images of digit {c}")
        rows = rng.permutation(rows)
        train.append(rows[:half_train])
        test.append(rows[half_train:half_train + half_test])
    return np.concatenate(train), np.concatenate(test)


def _noise(data: DigitsData, y: np.ndarray, rng: np.random.Generator) -> NoisyDataset:
    """Noise patches of ``len(y)`` images on coordinates ``64 .. d - 1``."""
    n, k = y.shape[0], data.noise_per_sample
    if k == 0:
        support, values = np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0))
    elif data.noise == "dense":
        support = np.broadcast_to(np.arange(PIXELS, data.d, dtype=np.int64), (n, k))
        values = data.sigma_p * rng.standard_normal((n, k))
    else:
        support = np.empty((n, k), dtype=np.int64)
        for i in range(n):   # data generation only; O(s) per sample, not O(noise_dim)
            support[i] = np.sort(rng.choice(data.noise_dim, size=k, replace=False)) + PIXELS
        values = data.sigma_p * rng.standard_normal((n, k))
    return NoisyDataset(y=y, y_clean=y, support=np.ascontiguousarray(support), values=values,
                        signal_position=np.zeros(n, dtype=np.int64),
                        mu_norm=data.image_norm, d=data.d)


def draw_digits(data: DigitsData, seed: int, *,
                images: tuple[np.ndarray, np.ndarray] | None = None) -> DigitsRun:
    """The training and test patches of the run with ``seed``.

    ``images`` is ``load_digit_images()`` (loaded here when not given).
    """
    pixels, labels = load_digit_images() if images is None else images
    index, test_index = _split(labels, data, seed)
    half_train, half_test = data.n_train // 2, data.n_test // 2
    y = np.repeat([1.0, -1.0], half_train)
    test_y = np.repeat([1.0, -1.0], half_test)
    a, test_a = pixels[index], pixels[test_index]                        # (n, 64), (n_test, 64)
    center = 0.5 * (a[:half_train].mean(0) + a[half_train:].mean(0))     # (64,)

    def normalize(img):
        img = img - center
        norm = np.linalg.norm(img, axis=1, keepdims=True)
        return data.image_norm * np.divide(img, norm, out=np.zeros_like(img), where=norm > 0)

    x1, test_x1 = normalize(a), normalize(test_a)
    mu = 0.5 * (x1[:half_train].mean(0) - x1[half_train:].mean(0))      # (64,)
    noise = _noise(data, y, np.random.default_rng([seed, TRAIN_NOISE_STREAM]))
    test_noise = _noise(data, test_y, np.random.default_rng([seed, TEST_NOISE_STREAM]))
    return DigitsRun(x1=x1, y=y, noise=noise, test_x1=test_x1, test_y=test_y,
                     test_noise=test_noise, mu=mu, index=index, test_index=test_index)


# ---------------------------------------------------------------------------
# the training problem
# ---------------------------------------------------------------------------

def digits_data(config: SimulationConfig) -> DigitsData:
    """The digits task a config with ``data='digits'`` describes (the inverse of
    :func:`digits_config`): ``noise_dim = d - 64``, ``n_train = n``, ``n_test``, the
    noise fields, and ``image_norm = mu_norm``."""
    return DigitsData(classes=(config.digit_positive, config.digit_negative),
                      n_train=config.n, n_test=config.n_test, noise=config.noise,
                      sigma_p=config.sigma_p, s=min(config.s, config.d - PIXELS),
                      noise_dim=config.d - PIXELS, image_norm=config.mu_norm)


def digits_config(data: DigitsData, base: SimulationConfig | None = None) -> SimulationConfig:
    """``base`` (model, optimizer, runs) with its data fields set to describe ``data``:
    ``d = 64 + noise_dim``, ``n = n_train``, ``n_test``, ``noise``, ``s``, ``sigma_p``
    and ``mu_norm = image_norm``. The history saved with a digits run carries it."""
    base = SimulationConfig() if base is None else base
    noise = "none" if data.noise_per_sample == 0 else data.noise
    return base.replace(d=data.d, n=data.n_train, n_test=data.n_test, noise=noise,
                        s=min(data.s, data.noise_dim), sigma_p=data.sigma_p,
                        mu_norm=data.image_norm, label_flip=0.0, signal_position="first",
                        data="digits", digit_positive=data.classes[0],
                        digit_negative=data.classes[1])


def build_digits_problem(data: DigitsData, config: SimulationConfig | None = None, *,
                         images: tuple[np.ndarray, np.ndarray] | None = None) -> TrainingProblem:
    """The batched training problem of the digits task, run ``r`` with seed
    ``config.seed + r``.

    The basis of a run is the 64 pixel coordinates and the training noise supports
    (sorted, so pixels are columns 0..63), padded to a common ``D`` with the
    sentinel coordinate ``d``. ``X[r, i] = [x_1, xi]`` in that basis, ``W0`` are the
    counter-based initial weights of those coordinates, and the held-out inputs are
    projected as in :mod:`simulator.problem`: test images through
    ``test_signal_in_basis``, fresh test noise through ``test_frozen`` (initial
    weights of fresh coordinates) and ``test_in_basis``.

    Returns
    -------
    TrainingProblem
        Its ``config`` is ``digits_config(data, config)``; train it with
        ``train(problem.config, problem=problem)``.
    """
    config = digits_config(data, config)
    if config.engine != "full" or config.coordinates != "active":
        raise ConfigError("digits runs need engine='full' and coordinates='active'; "
                          f"got engine={config.engine!r}, coordinates={config.coordinates!r}")
    images = load_digit_images() if images is None else images
    seeds = np.array(config.seeds, dtype=np.int64)
    runs = [draw_digits(data, int(seed), images=images) for seed in seeds]
    pixels = np.arange(PIXELS, dtype=np.int64)
    bases = [np.union1d(pixels, run.noise.support.ravel()) for run in runs]
    D = max(b.size for b in bases)
    R, n, M = len(runs), data.n_train, config.n_weight_rows
    coords = np.full((R, D), config.d, dtype=np.int64)                    # sentinel d
    X = np.zeros((R, n, 2, D))                     # a digit patch and a noise patch
    signal_direction = np.zeros((R, D))
    rows = np.arange(n)[:, None]
    for r, (run, basis) in enumerate(zip(runs, bases)):
        coords[r, :basis.size] = basis
        X[r, :, 0, :PIXELS] = run.x1
        X[r, rows, 1, np.searchsorted(basis, run.noise.support)] = run.noise.values
        signal_direction[r, :PIXELS] = run.mu
    W0 = np.stack([initial_weights(int(seed), M, c, config.sigma_0)
                   for seed, c in zip(seeds, coords)])                   # (R, M, D)
    split = [split_test_noise(run.test_noise, basis, D, int(seed), config)
             for run, basis, seed in zip(runs, bases, seeds)]
    test_signal_in_basis = [sp.csr_matrix(np.pad(run.test_x1, ((0, 0), (0, D - PIXELS))))
                            for run in runs]                               # (n_test, D) each
    test_y = np.stack([run.test_y for run in runs])
    return TrainingProblem(
        config=config, layout=Layout.of(config), seeds=seeds, coords=coords, X=X,
        y=np.stack([run.y for run in runs]), W0=W0,
        train=[run.noise for run in runs], test=[run.test_noise for run in runs],
        test_frozen=np.stack([s[1] for s in split]),
        test_in_basis=[s[0] for s in split],
        test_overlap_fraction=np.array([trained_fraction(run.test_noise, run.noise) for run in runs]),
        test_y=test_y, test_signal=test_y * data.image_norm,
        test_signal_position=np.zeros(test_y.shape, dtype=np.int64),
        test_signal_in_basis=test_signal_in_basis, signal_direction=signal_direction)


def train_digits(data: DigitsData, config: SimulationConfig | None = None, *,
                 progress: bool = False, images: tuple[np.ndarray, np.ndarray] | None = None):
    """Build the digits problem and train it with :func:`simulator.training.train`.

    Returns the :class:`~simulator.training.TrainingResult`; its history has the
    usual arrays, with ``Vs, Qs, Ks`` the projections on the class-mean direction
    ``mu`` and ``Vn, Qn, Kn`` on ``y_i xi_i`` (see the module doc).
    """
    from .training import train

    problem = build_digits_problem(data, config, images=images)
    return train(problem.config, problem=problem, progress=progress)
