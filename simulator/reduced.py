"""The reduced engine: trains the theory's quantities instead of the weights
(``docs/theory.md`` section 9; select it with ``engine='reduced'``).

With disjoint noise supports the training dynamics close on the state
``(Vs, Vn_i, Qs_s, Ks_s, Qn_si, Kn_si)`` of size ``O(m_k n)``, whatever ``d`` and
``s`` are; with ``n_patches = L > 2`` the noise quantities are per noise patch
(``n (L - 1)`` noise rows, patch-major as :mod:`simulator.data`). The math is in :mod:`simulator.reduced_dynamics` (the model on the
state, its gradient scalars, the exact lift of every optimizer of
:mod:`simulator.optimizers`, the fused SignGD kernel); this module owns the batch
and the engine that :func:`simulator.training.run_loop` drives. Its history has the
arrays, shapes and meanings of :data:`simulator.history.SCHEMA`, as the full
engine's, so ``analysis/`` reads it unchanged.

Initial state (``config.reduced_init``)
---------------------------------------
* ``data``: the training set and the initial weights are drawn exactly as the full
  engine draws them (:func:`~simulator.data.draw_training_set`,
  :func:`~simulator.initialization.initial_weights`), and the state is their inner
  products, so the two engines can be compared run for run.
* ``distribution``: data-free. Given the noise values, the state is Gaussian and
  independent across entries: ``Qs_s, Ks_s ~ N(0, sigma_0^2 ||mu||^2)``,
  ``Qn_si, Kn_si ~ N(0, sigma_0^2 ||xi_i||_2^2)``, ``Vs ~ N(0, 2 sigma_0^2 ||mu||^2 / m_v)``,
  ``Vn_i ~ N(0, 2 sigma_0^2 ||xi_i||_2^2 / m_v)`` (``vbar`` is a difference of two means of
  ``m_v`` rows). Labels, patch order and the ``s`` noise values per sample are drawn
  as in :mod:`simulator.data`; the supports are never drawn, the runs being
  conditioned on disjoint supports.

Test loss and test error
------------------------
Test inputs are evaluated on fresh supports, whose weights are still at
initialization: a test input's noise projections are exact Gaussians,
``W_Q xi, W_K xi ~ N(0, sigma_0^2 ||xi||_2^2 I_{m_k})`` and
``<vbar, xi> ~ N(0, 2 sigma_0^2 ||xi||_2^2 / m_v)``, with
``||xi||_2^2 ~ sigma_p^2 chi^2_s``, drawn once per run (stream ``[seed, 2, 1]``) and
fixed during training; its signal terms come from the trained ``Qs, Ks, Vs``. A real
test input touches a trained coordinate with probability about ``n s^2 / d``; the
reduced engine cannot represent those. ``test_overlap_fraction`` in the history is
the *expected* fraction of test noise coordinates that are trained,
``n s / (d - 1)``, and a :class:`ReducedTestWarning` reports the expected fraction
of test inputs touched when it exceeds 1%.

Where the reduction is not exact, the engine refuses with a :class:`ReductionError`
(a :class:`~simulator.config.ConfigError`, one line): training supports that share
a coordinate (it names the run and the samples), dense noise, and ``n s > d - 1``.
Real data (:mod:`simulator.digits`, whose signal patch is not ``y ||mu|| e_1``) never
reaches this engine: its builder requires ``engine='full'``. Label-flip noise (the
sign ``c_i = y_i y_clean_i``) and a random signal position (the softmax is kept in
signal/noise order) keep the reduction exact and are supported.

Floating point: SignGD on the plain model (no score scale, sum pooling, no feature
noise, full batches) runs on the fused kernel
:func:`~simulator.reduced_dynamics.signgd_direction`, which takes the exact signs of
the gradient. Where the full engine's products ``l'_i S_ns S_nn`` or ``l'_i`` itself
underflow to 0 (its ``sign`` is then 0 and the sample stops), the kernel keeps the
exact laws; the history's ``lprime`` and ``underflow_step`` still report the float64
``l'``, as the full engine does. Every other optimizer, and SignGD on a variant, is
lifted onto the state (:func:`~simulator.reduced_dynamics.lift`) from the float64
gradient of the model, as the full engine computes it.

Runs are independent; the engine advances them in chunks of at most
:data:`CHUNK_BYTES` of working memory, each chunk vectorized over its runs
(:func:`reduced_chunks`), through the one loop of :mod:`simulator.training`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .config import ConfigError, SimulationConfig
from .data import DATA_STREAM, TEST_STREAM, draw_training_set
from .initialization import initial_weights
from .model import PLAIN, HeldOut, Layout, ModelOptions, attend, held_out_margins, held_out_statistics
from .optimizers import make_optimizer
from .reduced_dynamics import (Magnitudes, evaluate, flat_state, gradient, lift,
                               signgd_direction, state_size)

#: Working memory per chunk of runs (state, temporaries, test inputs).
CHUNK_BYTES = 48 * 2 ** 20
#: Random stream of the reduced engine's test inputs: ``default_rng([seed, 2, 1])``.
TEST_KEY = (TEST_STREAM, 1)
#: Random stream of a data-free initial state: ``default_rng([seed, 1, 1])``.
DISTRIBUTION_KEY = (DATA_STREAM, 1)
#: Expected fraction of test inputs touching trained coordinates above which a
#: :class:`ReducedTestWarning` is issued.
WARN_TEST_OVERLAP = 0.01


class ReductionError(ConfigError):
    """The reduced dynamics are not exact for this config (the message says why)."""


class ReducedTestWarning(UserWarning):
    """Some real test inputs would touch trained coordinates (not represented)."""


# ---------------------------------------------------------------------------
# the batch of runs: constants, initial state and test inputs (run axis last)
# ---------------------------------------------------------------------------

class HeldOutInputs(NamedTuple):
    """Held-out inputs on fresh supports (run axis *first*, for batched matmul)."""

    q: np.ndarray         # (R, P n_test, m_k)  W_Q xi of each noise patch (patch-major)
    k: np.ndarray         # (R, P n_test, m_k)  W_K xi
    u: np.ndarray         # (R, P n_test, 1)    <vbar, xi>
    y: np.ndarray         # (R, n_test, 1)    observed test labels
    y_clean: np.ndarray   # (R, n_test, 1)    labels carried by the signal patch


@dataclass
class ReducedBatch:
    """A chunk of runs: per-sample constants, initial state and test inputs."""

    seeds: np.ndarray       # (R,)
    y: np.ndarray           # (n, R)
    y_clean: np.ndarray     # (n, R)
    signal_position: np.ndarray  # (n, R) int
    mag: Magnitudes         # ||mu||, |xi_ik| of each noise row
    QKs: np.ndarray         # (2, m_k, 1, R)    [Qs, Ks]
    QKn: np.ndarray         # (2, m_k, P n, R)  [Qh, Kh] = c [Qn, Kn], noise rows patch-major
    Vs: np.ndarray          # (1, R)
    Vh: np.ndarray          # (P n, R)          c Vn
    test: HeldOutInputs

    @property
    def c(self) -> np.ndarray:
        """``c_i = y_i y_clean_i`` (n, R)."""
        return self.y * self.y_clean

    @property
    def c_noise(self) -> np.ndarray:
        """``c_i`` of every noise row ``j n + i`` (P n, R)."""
        return np.tile(self.c, (self.QKn.shape[2] // self.c.shape[0], 1))


def check_reducible(config: SimulationConfig) -> None:
    """Raise :class:`ReductionError` when the reduction cannot be exact for ``config``
    whatever the data (shared supports are checked on the data itself)."""
    if config.noise == "dense":
        raise ReductionError(
            "engine='reduced' needs disjoint noise supports, but noise='dense' puts every "
            "sample's noise on all d - 1 coordinates; use engine='full'")
    rows = config.n * (config.n_patches - 1)                  # noise patches
    if config.noise == "sparse" and rows * config.s > config.d - 1:
        count = "n * s" if config.n_patches == 2 else "n * (n_patches - 1) * s"
        raise ReductionError(
            f"engine='reduced' needs disjoint noise supports, impossible with {count} = "
            f"{rows * config.s} > d - 1 = {config.d - 1}; use engine='full'")


def _check_disjoint(config: SimulationConfig, shared: dict[int, np.ndarray]) -> None:
    """Refuse runs whose training supports share coordinates, naming the samples."""
    if not shared:
        return
    seed, counts = next(iter(shared.items()))
    samples = np.flatnonzero(counts)
    more = f" (and {len(shared) - 1} more run(s))" if len(shared) > 1 else ""
    raise ReductionError(
        f"engine='reduced' needs disjoint noise supports, but in run seed {seed} samples "
        f"{', '.join(map(str, samples))} share {int(counts.sum())} noise coordinate(s) with "
        f"one another or between their patches{more}; for the reduced engine draw the "
        f"state from its law given "
        f"disjoint supports: reduced_init='distribution' (python -m simulator run --engine "
        f"reduced --reduced-init distribution; other data than engine='full' for the same "
        f"seed), or use engine='full' or a larger d")


def _state_from_data(config: SimulationConfig, seeds: np.ndarray):
    """Per run: draw the training set and ``W_0`` as the full engine does and project."""
    lay = Layout.of(config)
    M, mu = lay.M, config.mu_norm
    out, shared = [], {}
    for seed in seeds:
        ds = draw_training_set(config, int(seed))
        counts = ds.shared_coordinates()                                   # (P n,)
        if counts.any():
            shared[int(seed)] = counts.reshape(-1, ds.n).sum(0)            # per sample
            continue
        rows, s = ds.support.shape                                         # P n noise patches
        coords = np.concatenate([[0], ds.support.ravel()])
        W0 = initial_weights(int(seed), M, coords, config.sigma_0)        # (M, 1 + P n s)
        proj = np.einsum("mis,is->mi", W0[:, 1:].reshape(M, rows, s), ds.values)  # (M, P n) W_0 xi_ij
        w0 = W0[:, 0]                                                      # (M,)
        vbar_xi = proj[lay.Vp].mean(0) - proj[lay.Vm].mean(0)              # (P n,)
        y_clean = np.tile(ds.y_clean, rows // ds.n)                        # of each noise row
        out.append(dict(
            y=ds.y, y_clean=ds.y_clean, signal_position=ds.signal_position, values=ds.values,
            Qs=mu * w0[lay.Q], Ks=mu * w0[lay.K],
            Vs=mu * (w0[lay.Vp].mean() - w0[lay.Vm].mean()),
            Qh=y_clean * proj[lay.Q], Kh=y_clean * proj[lay.K], Vh=y_clean * vbar_xi))
    _check_disjoint(config, shared)
    return out


def _state_from_distribution(config: SimulationConfig, seeds: np.ndarray):
    """Per run: labels and noise values as :mod:`simulator.data`, the state from its
    exact Gaussian law given them (module doc)."""
    n, m_k, m_v, s0, mu = config.n, config.m_k, config.m_v, config.sigma_0, config.mu_norm
    s = config.s if config.noise == "sparse" else 0
    L = config.n_patches
    rows = n * (L - 1)                                                     # noise patches
    out = []
    for seed in seeds:
        rng = np.random.default_rng([int(seed), *DISTRIBUTION_KEY])
        y_clean = rng.choice(np.array([-1.0, 1.0]), size=n)
        y = np.where(rng.random(n) < config.label_flip, -y_clean, y_clean)
        values = config.sigma_p * rng.standard_normal((rows, s))
        position = (rng.integers(0, L, size=n) if config.signal_position == "random"
                    else np.zeros(n, dtype=np.int64))
        l2 = np.sqrt(np.square(values).sum(1))                             # (P n,)
        z = rng.standard_normal(2 * m_k + 1 + (2 * m_k + 1) * rows)
        zs, zn = z[:2 * m_k + 1], z[2 * m_k + 1:].reshape(2 * m_k + 1, rows)
        out.append(dict(
            y=y, y_clean=y_clean, signal_position=position, values=values,
            Qs=s0 * mu * zs[:m_k], Ks=s0 * mu * zs[m_k:2 * m_k],
            Vs=s0 * mu * math.sqrt(2.0 / m_v) * zs[-1],
            Qh=s0 * l2 * zn[:m_k], Kh=s0 * l2 * zn[m_k:2 * m_k],
            Vh=s0 * math.sqrt(2.0 / m_v) * l2 * zn[-1]))
    return out


def draw_test_inputs(config: SimulationConfig, seed: int) -> tuple[np.ndarray, ...]:
    """Test inputs of one run on fresh supports, from their exact law (module doc).

    Returns ``q, k`` (P n_test, m_k) and ``u`` (P n_test,) of the noise patches
    (patch-major), and ``y, y_clean`` (n_test,).
    """
    n_test, m_k, s0 = config.n_test, config.m_k, config.sigma_0
    rows = n_test * (config.n_patches - 1)
    rng = np.random.default_rng([int(seed), *TEST_KEY])
    y_clean = rng.choice(np.array([-1.0, 1.0]), size=n_test)
    y = np.where(rng.random(n_test) < config.label_flip, -y_clean, y_clean)
    if config.noise == "sparse":
        l2 = config.sigma_p * np.sqrt(rng.chisquare(config.s, size=rows))     # ||xi||_2
    else:
        l2 = np.zeros(rows)
    z = rng.standard_normal((rows, 2 * m_k + 1))
    q = s0 * l2[:, None] * z[:, :m_k]
    k = s0 * l2[:, None] * z[:, m_k:2 * m_k]
    u = s0 * math.sqrt(2.0 / config.m_v) * l2 * z[:, -1]
    return q, k, u, y, y_clean


def build_reduced_batch(config: SimulationConfig, seeds: np.ndarray) -> ReducedBatch:
    """Constants, initial state and test inputs of the runs ``seeds`` (run axis last)."""
    check_reducible(config)
    runs = (_state_from_distribution if config.reduced_init == "distribution"
            else _state_from_data)(config, seeds)

    def stack(name, axis=-1):
        return np.stack([run[name] for run in runs], axis=axis)

    values = stack("values")                                              # (n, s, R)
    tests = [draw_test_inputs(config, int(seed)) for seed in seeds]
    return ReducedBatch(
        seeds=np.asarray(seeds, dtype=np.int64), y=stack("y"), y_clean=stack("y_clean"),
        signal_position=stack("signal_position").astype(np.int64),
        mag=Magnitudes(mu=config.mu_norm,
                       abs_xi=np.ascontiguousarray(np.abs(values).transpose(1, 0, 2))),
        QKs=np.stack([stack("Qs"), stack("Ks")])[:, :, None, :],
        QKn=np.stack([stack("Qh"), stack("Kh")]),
        Vs=stack("Vs")[None, :], Vh=stack("Vh"),
        test=HeldOutInputs(*(np.stack([t[j] for t in tests]) for j in range(2)),
                        *(np.stack([t[j] for t in tests])[..., None] for j in range(2, 5))))


def expected_test_overlap(config: SimulationConfig) -> tuple[float, float]:
    """Expected fraction of test noise coordinates that are trained, ``n s / (d - 1)``,
    and expected fraction of test noise patches touching at least one of them,
    ``1 - prod_{j < s} (1 - n s / (d - 1 - j))`` (disjoint training supports; with
    ``L`` patches ``n`` counts the ``n (L - 1)`` noise patches)."""
    if config.noise != "sparse" or config.sigma_p == 0.0:
        return 0.0, 0.0
    trained, pool = config.n * (config.n_patches - 1) * config.s, config.d - 1
    j = np.arange(config.s)
    ratio = np.minimum(trained / (pool - j), 1.0)
    with np.errstate(divide="ignore"):
        touched = -math.expm1(float(np.log1p(-ratio).sum()))
    return trained / pool, touched


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------

#: Working memory of one block of held-out evaluations.
BLOCK_BYTES = 32 * 2 ** 20
#: SignGD runs on the fused kernel (False: SignGD lifted like every other optimizer).
FUSED_SIGNGD = True


class Evaluation(NamedTuple):
    """The state's forward pass: margins, softmax, and what the step needs."""

    margin: np.ndarray          # (R, n) y_i f_i
    softmax: np.ndarray         # (R, n, 2, 2) S_lk, patch 0 = signal
    att: object = None          # model cache (lifted optimizers)
    batch: np.ndarray | None = None   # (R, n) the step's mini-batch (None: all samples)


class ReducedEngine:
    """The engine protocol of :func:`simulator.training.run_loop` on the reduced state
    of a chunk of runs (:class:`ReducedBatch`)."""

    def __init__(self, config: SimulationConfig, seeds: np.ndarray):
        self.config, self.m_k, self.n_samples = config, config.m_k, config.n
        self.L = config.n_patches
        self.n = config.n * (self.L - 1)                                 # noise rows
        self.batch = build_reduced_batch(config, seeds)
        self.R = len(seeds)
        self.optimizer = make_optimizer(config)
        #: SignGD runs on the fused kernel (exact signs), every other optimizer lifted
        self.options = ModelOptions.of(config)
        self.alpha = config.feature_noise
        plain = (self.options == PLAIN and not self.alpha and self.L == 2
                 and config.batch_size in (None, config.n))
        self.fused = FUSED_SIGNGD and config.optimizer == "signgd" and plain
        self.c = self.batch.c                                            # (n, R)
        self.clean = bool((self.c == 1.0).all())
        self.eta_l1 = config.eta * self.batch.mag.l1                     # (n, R)
        self.step = flat_state(np.zeros((state_size(self.m_k, self.n), self.R)), self.m_k, self.n)
        n_test = config.n_test
        size = state_size(self.m_k, self.n)
        per_record = 12 * n_test * self.L ** 2 + 2 * size
        self.block = max(1, min(256, BLOCK_BYTES // (8 * self.R * per_record)))

    def initial_params(self):
        b = self.batch
        x = flat_state(np.empty((state_size(self.m_k, self.n), self.R)), self.m_k, self.n)
        x.QKn[...], x.QKs[...], x.Vh[...], x.Vs[...] = b.QKn, b.QKs, b.Vh, b.Vs
        return x

    def evaluate(self, x, batch=None) -> Evaluation:
        if self.fused:           # margins, softmax and the step of the fused kernel
            margin, S = signgd_direction(x, self.c, self.eta_l1,
                                         self.config.eta * self.config.mu_norm,
                                         clean=self.clean, out=self.step)
            softmax = np.stack([S[1], S[0]], axis=-1).transpose(2, 1, 0, 3)  # (R, n, l, k)
            return Evaluation(margin.T, softmax)
        att, margin = evaluate(x, self.c, self.options, self.alpha)
        return Evaluation(margin, att.S, att, batch)

    def update(self, x, ev: Evaluation, state, t: int):
        """``X <- X - step`` in place; returns the optimizer's new state."""
        if not self.fused:
            h = gradient(ev.att, ev.margin, self.c, self.config.m_v, ev.batch, self.alpha)
            state = lift(self.optimizer, h, self.batch.mag, self.config.m_v, state, t,
                         self.config.eta, out=self.step)
        np.subtract(x.X, self.step.X, out=x.X)
        return state

    def snapshot(self, x, ev: Evaluation) -> dict[str, np.ndarray]:
        """What a record needs: margins, softmax and the state (references: the loop
        copies them into its block before the next step)."""
        return {"margin": ev.margin, "softmax": ev.softmax, "X": x.X}

    def record(self, snaps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The section-4 quantities in the history's frame (``Qn = c Qh``, ...) and the
        test metrics of a block of ``K`` snapshots (leading axis ``K``)."""
        X, m_k, n = snaps["X"], self.m_k, self.n                           # (K, N, R), n noise rows
        K = X.shape[0]
        c = self.batch.c_noise.T                                         # (R, P n)
        QKn = X[:, :2 * m_k * n].reshape(K, 2, m_k, n, self.R)           # [Qh, Kh]
        QKs = X[:, 2 * m_k * n:2 * m_k * (n + 1)]                        # (K, 2 m_k, R) [Qs, Ks]
        Vh, Vs = X[:, 2 * m_k * (n + 1):-1], X[:, -1]                    # (K, n, R), (K, R)
        return {"Vs": Vs, "Vn": c * Vh.swapaxes(1, 2),
                "Qs": QKs[:, :m_k].swapaxes(1, 2), "Ks": QKs[:, m_k:].swapaxes(1, 2),
                "Qn": c[:, None, :] * QKn[:, 0].transpose(0, 3, 1, 2),
                "Kn": c[:, None, :] * QKn[:, 1].transpose(0, 3, 1, 2),
                "softmax": snaps["softmax"],
                **self.held_out_metrics(QKs, Vs)}

    def held_out_metrics(self, QKs: np.ndarray, Vs: np.ndarray) -> dict[str, np.ndarray]:
        """Test metrics ``(K, R)`` at ``K`` states ``[Qs, Ks]`` (K, 2 m_k, R), ``Vs`` (K, R):
        the model on test inputs on fresh supports (two patches:
        :func:`~simulator.model.held_out_margins`; more: :func:`~simulator.model.attend`
        on the inputs' projections)."""
        test, m_k = self.batch.test, self.m_k
        state = QKs.transpose(0, 2, 1)                                   # (K, R, 2 m_k)
        Qs, Ks = state[..., :m_k], state[..., m_k:]
        P = self.L - 1
        y_c = np.tile(test.y_clean, (1, P, 1))                           # (R, P n_test, 1)
        qn, kn, un = y_c * test.q, y_c * test.k, (y_c * test.u)[..., 0]  # signal frame
        if self.alpha:                       # noise patch y_c (xi - alpha y_c mu): per state
            qn = qn - self.alpha * Qs[:, :, None, :]
            kn = kn - self.alpha * Ks[:, :, None, :]
            un = un - self.alpha * Vs[:, :, None]
        c = (test.y * test.y_clean)[..., 0]                              # (R, n_test)
        if P == 1:
            margin = held_out_margins(Qs, Ks, Vs, HeldOut(qn, kn, un, c), options=self.options)  # (K, R, n_test)
            return held_out_statistics(margin)
        K, R, n_test = Vs.shape[0], self.R, c.shape[1]
        q, k, u = (np.empty((K, R, n_test, self.L, m_k)), np.empty((K, R, n_test, self.L, m_k)),
                   np.empty((K, R, n_test, self.L)))
        q[..., 0, :], k[..., 0, :], u[..., 0] = Qs[:, :, None], Ks[:, :, None], Vs[:, :, None]
        for j in range(P):                                               # noise patch j
            rows = slice(j * n_test, (j + 1) * n_test)
            q[..., j + 1, :], k[..., j + 1, :] = qn[..., rows, :], kn[..., rows, :]
            u[..., j + 1] = un[..., rows]
        return held_out_statistics(c * attend(q, k, u, self.options).f)

    def per_run(self) -> dict[str, np.ndarray]:
        b = self.batch
        return {"seeds": b.seeds, "y": b.y.T, "y_clean": b.y_clean.T,
                "signal_position": b.signal_position.T, "xi_l1": b.mag.l1.T,
                "xi_l2": np.sqrt(np.square(b.mag.abs_xi).sum(0)).T,
                "shared_coordinates": np.zeros((self.R, self.n), dtype=np.int64),
                "test_overlap_fraction": np.zeros(self.R)}


def reduced_chunks(config: SimulationConfig) -> list:
    """``(runs, make)`` pairs of :func:`simulator.training.engine_chunks` for
    ``engine='reduced'``; warns (:class:`ReducedTestWarning`) when many real test
    inputs would touch trained coordinates."""
    if config.engine != "reduced":
        raise ValueError(f"reduced_chunks() runs engine='reduced'; got engine={config.engine!r}")
    check_reducible(config)
    overlap_coords, overlap_inputs = expected_test_overlap(config)
    if overlap_inputs > WARN_TEST_OVERLAP:
        warnings.warn(
            f"reduced engine: test inputs are evaluated on fresh supports, but at d={config.d} "
            f"about {100 * overlap_inputs:.1f}% of real test inputs would touch a trained "
            f"coordinate (expected fraction of trained test coordinates {overlap_coords:.4f}); "
            f"engine='full' includes them", ReducedTestWarning, stacklevel=3)
    R = config.n_seeds
    seeds = np.array(config.seeds, dtype=np.int64)
    size = chunk_size(config)
    return [(slice(a, min(a + size, R)),
             lambda a=a: ReducedEngine(config, seeds[a:a + size]))
            for a in range(0, R, size)]


def chunk_size(config: SimulationConfig) -> int:
    """Runs per chunk so that a chunk's working memory stays near :data:`CHUNK_BYTES`."""
    L, m_k, s = config.n_patches, config.m_k, config.s if config.noise == "sparse" else 0
    n = config.n * (L - 1)                                   # noise rows
    floats = (12 * m_k * n + (2 * m_k + 6) * config.n_test * (L - 1) + 2 * n * s
              + 4 * L * L * (config.n + config.n_test))
    if config.optimizer != "signgd":          # lifted: gradients and state per coordinate
        floats += 8 * (2 * m_k + 1) * n * max(s, 1)
    return max(1, min(config.n_seeds, CHUNK_BYTES // (8 * floats)))
