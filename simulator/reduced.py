"""The reduced engine: trains the theory's quantities instead of the weights
(``SETTING.md`` section 9; select it with ``engine='reduced'``).

With disjoint noise supports the training dynamics close on the state
``(Vs, Vn_i, Qs_s, Ks_s, Qn_si, Kn_si)`` of size ``O(m_k n)``, whatever ``d`` and
``s`` are. The math is in :mod:`simulator.reduced_dynamics` (attention, loss,
gradient scalars) and :mod:`simulator.reduced_optimizers` (SignGD, GD, Adam,
Signum, NormGD as exact update rules); this module owns the state, the loop and the
history, which has the same arrays, shapes and meanings as the full engine's
(:mod:`simulator.history`), so ``analysis/`` reads it unchanged.

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

Floating point: SignGD uses the exact signs of the gradient
(:func:`~simulator.reduced_dynamics.gradient_signs`). Where the full engine's
products ``l'_i S_ns S_nn`` or ``l'_i`` itself underflow to 0 (its ``sign`` is then 0
and the sample stops), the reduced engine keeps the exact laws; the history's
``lprime`` and ``underflow_step`` still report the float64 ``l'``, as the full
engine does. The other optimizers use the float64 gradient, as the full engine.

Runs are independent; the engine advances them in chunks of at most
:data:`CHUNK_BYTES` of working memory, each chunk vectorized over its runs. SignGD
runs on one flat state array with a fused step
(:func:`~simulator.reduced_dynamics.signgd_direction`, a few dozen NumPy calls);
chunks of at most :data:`SPECULATE_MAX_RUNS` runs advance in sign-stable stretches
(:func:`_run_signgd`), which is exact and several times faster for a single run.
The other optimizers use the generic loop (:func:`_run_steps`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import expit

from .config import ConfigError, SimulationConfig, check_memory
from .data import DATA_STREAM, TEST_STREAM, draw_training_set
from .history import History, allocate_recorded
from .initialization import initial_weights
from .model import Layout, held_out_statistics, logistic_loss, loss_derivative
from .progress import Progress
from .reduced_dynamics import (attention, gradient, gradient_signs,
                               flat_state, signgd_direction, state_size)
from .reduced_optimizers import Magnitudes, SignGD, make_reduced_optimizer

#: Working memory per chunk of runs (state, temporaries, test inputs).
CHUNK_BYTES = 48 * 2 ** 20
#: Random stream of the reduced engine's test inputs: ``default_rng([seed, 2, 1])``.
TEST_KEY = (TEST_STREAM, 1)
#: Random stream of a data-free initial state: ``default_rng([seed, 1, 1])``.
DISTRIBUTION_KEY = (DATA_STREAM, 1)
#: SignGD chunks of at most this many runs advance in sign-stable stretches
#: (:func:`_run_signgd`); with more runs some sign changes at almost
#: every step and the plain loop is faster.
SPECULATE_MAX_RUNS = 2
#: Longest sign-stable stretch evaluated in one pass.
STRETCH_MAX = 64
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

    q: np.ndarray         # (R, n_test, m_k)  W_Q xi
    k: np.ndarray         # (R, n_test, m_k)  W_K xi
    u: np.ndarray         # (R, n_test, 1)    <vbar, xi>
    y: np.ndarray         # (R, n_test, 1)    observed test labels
    y_clean: np.ndarray   # (R, n_test, 1)    labels carried by the signal patch


@dataclass
class ReducedBatch:
    """A chunk of runs: per-sample constants, initial state and test inputs."""

    seeds: np.ndarray       # (R,)
    y: np.ndarray           # (n, R)
    y_clean: np.ndarray     # (n, R)
    signal_position: np.ndarray  # (n, R) int
    mag: Magnitudes         # ||mu||, ||xi_i||_1, ||xi_i||_2^2, |xi_ik|
    QKs: np.ndarray         # (2, m_k, 1, R)  [Qs, Ks]
    QKn: np.ndarray         # (2, m_k, n, R)  [Qh, Kh] = c [Qn, Kn]
    Vs: np.ndarray          # (1, R)
    Vh: np.ndarray          # (n, R)          c Vn
    test: HeldOutInputs

    @property
    def c(self) -> np.ndarray:
        """``c_i = y_i y_clean_i`` (n, R)."""
        return self.y * self.y_clean


def check_reducible(config: SimulationConfig) -> None:
    """Raise :class:`ReductionError` when the reduction cannot be exact for ``config``
    whatever the data (shared supports are checked on the data itself)."""
    if config.noise == "dense":
        raise ReductionError(
            "engine='reduced' needs disjoint noise supports, but noise='dense' puts every "
            "sample's noise on all d - 1 coordinates; use engine='full'")
    if config.noise == "sparse" and config.n * config.s > config.d - 1:
        raise ReductionError(
            f"engine='reduced' needs disjoint noise supports, impossible with n * s = "
            f"{config.n * config.s} > d - 1 = {config.d - 1}; use engine='full'")


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
        f"one another{more}; use engine='full', a larger d, or "
        f"reduced_init='distribution' (conditioned on disjoint supports)")


def _state_from_data(config: SimulationConfig, seeds: np.ndarray):
    """Per run: draw the training set and ``W_0`` as the full engine does and project."""
    lay = Layout.of(config)
    M, mu = lay.M, config.mu_norm
    out, shared = [], {}
    for seed in seeds:
        ds = draw_training_set(config, int(seed))
        counts = ds.shared_coordinates()
        if counts.any():
            shared[int(seed)] = counts
            continue
        n, s = ds.support.shape
        coords = np.concatenate([[0], ds.support.ravel()])
        W0 = initial_weights(int(seed), M, coords, config.sigma_0)        # (M, 1 + n s)
        proj = np.einsum("mis,is->mi", W0[:, 1:].reshape(M, n, s), ds.values)  # (M, n) W_0 xi_i
        w0 = W0[:, 0]                                                      # (M,)
        vbar_xi = proj[lay.Vp].mean(0) - proj[lay.Vm].mean(0)              # (n,)
        out.append(dict(
            y=ds.y, y_clean=ds.y_clean, signal_position=ds.signal_position, values=ds.values,
            Qs=mu * w0[lay.Q], Ks=mu * w0[lay.K],
            Vs=mu * (w0[lay.Vp].mean() - w0[lay.Vm].mean()),
            Qh=ds.y_clean * proj[lay.Q], Kh=ds.y_clean * proj[lay.K], Vh=ds.y_clean * vbar_xi))
    _check_disjoint(config, shared)
    return out


def _state_from_distribution(config: SimulationConfig, seeds: np.ndarray):
    """Per run: labels and noise values as :mod:`simulator.data`, the state from its
    exact Gaussian law given them (module doc)."""
    n, m_k, m_v, s0, mu = config.n, config.m_k, config.m_v, config.sigma_0, config.mu_norm
    s = config.s if config.noise == "sparse" else 0
    out = []
    for seed in seeds:
        rng = np.random.default_rng([int(seed), *DISTRIBUTION_KEY])
        y_clean = rng.choice(np.array([-1.0, 1.0]), size=n)
        y = np.where(rng.random(n) < config.label_flip, -y_clean, y_clean)
        values = config.sigma_p * rng.standard_normal((n, s))
        position = (rng.integers(0, 2, size=n) if config.signal_position == "random"
                    else np.zeros(n, dtype=np.int64))
        l2 = np.sqrt(np.square(values).sum(1))                             # (n,)
        z = rng.standard_normal(2 * m_k + 1 + (2 * m_k + 1) * n)
        zs, zn = z[:2 * m_k + 1], z[2 * m_k + 1:].reshape(2 * m_k + 1, n)
        out.append(dict(
            y=y, y_clean=y_clean, signal_position=position, values=values,
            Qs=s0 * mu * zs[:m_k], Ks=s0 * mu * zs[m_k:2 * m_k],
            Vs=s0 * mu * math.sqrt(2.0 / m_v) * zs[-1],
            Qh=s0 * l2 * zn[:m_k], Kh=s0 * l2 * zn[m_k:2 * m_k],
            Vh=s0 * math.sqrt(2.0 / m_v) * l2 * zn[-1]))
    return out


def draw_test_inputs(config: SimulationConfig, seed: int) -> tuple[np.ndarray, ...]:
    """Test inputs of one run on fresh supports, from their exact law (module doc).

    Returns ``q, k`` (n_test, m_k) and ``u, y, y_clean`` (n_test,).
    """
    n_test, m_k, s0 = config.n_test, config.m_k, config.sigma_0
    rng = np.random.default_rng([int(seed), *TEST_KEY])
    y_clean = rng.choice(np.array([-1.0, 1.0]), size=n_test)
    y = np.where(rng.random(n_test) < config.label_flip, -y_clean, y_clean)
    if config.noise == "sparse":
        l2 = config.sigma_p * np.sqrt(rng.chisquare(config.s, size=n_test))   # ||xi||_2
    else:
        l2 = np.zeros(n_test)
    z = rng.standard_normal((n_test, 2 * m_k + 1))
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
        mag=Magnitudes(mu=config.mu_norm, l1=np.abs(values).sum(1),
                       l2sq=np.square(values).sum(1),
                       abs_xi=np.ascontiguousarray(np.abs(values).transpose(1, 0, 2))),
        QKs=np.stack([stack("Qs"), stack("Ks")])[:, :, None, :],
        QKn=np.stack([stack("Qh"), stack("Kh")]),
        Vs=stack("Vs")[None, :], Vh=stack("Vh"),
        test=HeldOutInputs(*(np.stack([t[j] for t in tests]) for j in range(2)),
                        *(np.stack([t[j] for t in tests])[..., None] for j in range(2, 5))))


# ---------------------------------------------------------------------------
# held-out metrics and recording
# ---------------------------------------------------------------------------

def test_margins(Qs: np.ndarray, Ks: np.ndarray, Vs: np.ndarray,
                 test: HeldOutInputs) -> np.ndarray:
    """Margins ``y f(X)`` of test inputs on fresh supports at ``T`` states.

    With ``q, k, u`` the input's noise projections ``W_Q xi, W_K xi, <vbar, xi>``
    and ``y_c`` its clean label::

        z_ss = sum_s Qs_s Ks_s,     z_sn = y_c sum_s Qs_s k_s,
        z_ns = y_c sum_s q_s Ks_s,  z_nn = sum_s q_s k_s
        f = (S_ss + S_ns) y_c Vs + (S_sn + S_nn) u

    Parameters
    ----------
    Qs, Ks : (R, m_k, T)
    Vs : (R, 1, T)
    test : HeldOutInputs

    Returns
    -------
    (R, n_test, T) margins.
    """
    z_nn = np.einsum("rnm,rnm->rn", test.q, test.k)[..., None]          # (R, n_test, 1)
    z_ss = (Qs * Ks).sum(1, keepdims=True)                               # (R, 1, T)
    gap_s = test.y_clean * (test.k @ Qs) - z_ss                          # z_sn - z_ss
    gap_n = z_nn - test.y_clean * (test.q @ Ks)                          # z_nn - z_ns
    to_noise = expit(gap_s) + expit(gap_n)                              # S_sn + S_nn
    f = (2.0 - to_noise) * test.y_clean * Vs      # S_ss + S_ns, abs. error < 1e-15
    f += to_noise * test.u
    return test.y * f


def held_out_metrics(Qs: np.ndarray, Ks: np.ndarray, Vs: np.ndarray,
                     test: HeldOutInputs) -> dict[str, np.ndarray]:
    """Test loss, test error and test margin statistics, each (R, T)."""
    return held_out_statistics(test_margins(Qs, Ks, Vs, test), axis=1)


def expected_test_overlap(config: SimulationConfig) -> tuple[float, float]:
    """Expected fraction of test noise coordinates that are trained, ``n s / (d - 1)``,
    and expected fraction of test inputs touching at least one of them,
    ``1 - prod_{j < s} (1 - n s / (d - 1 - j))`` (disjoint training supports)."""
    if config.noise != "sparse" or config.sigma_p == 0.0:
        return 0.0, 0.0
    trained, pool = config.n * config.s, config.d - 1
    j = np.arange(config.s)
    ratio = np.minimum(trained / (pool - j), 1.0)
    with np.errstate(divide="ignore"):
        touched = -math.expm1(float(np.log1p(-ratio).sum()))
    return trained / pool, touched


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------

@dataclass
class ReducedResult:
    """A finished batch of runs of the reduced engine."""

    history: History
    state: dict[str, np.ndarray]   # final Vs (R,), Vn (R, n), Qs, Ks (R, m_k), Qn, Kn (R, m_k, n)
    test_inputs_overlap_fraction: float
    """Expected fraction of real test inputs that would touch a trained coordinate
    (not represented by the reduced engine's test metrics)."""


def chunk_size(config: SimulationConfig) -> int:
    """Runs per chunk so that a chunk's working memory stays near :data:`CHUNK_BYTES`."""
    n, m_k, s = config.n, config.m_k, config.s if config.noise == "sparse" else 0
    floats = 12 * m_k * n + (2 * m_k + 6) * config.n_test + 2 * n * s
    if config.optimizer == "adam":
        floats += 10 * m_k * n + 3 * s * m_k * n
    return max(1, min(config.n_seeds, CHUNK_BYTES // (8 * floats)))


def train_reduced(config: SimulationConfig, *, progress: bool = False) -> ReducedResult:
    """Train every run of ``config`` on the reduced engine and record its history.

    Parameters
    ----------
    config : SimulationConfig
        With ``engine='reduced'``.
    progress : bool
        Show a progress line on stderr when the run takes more than a few seconds.

    Raises
    ------
    ReductionError
        When the reduction is not exact for ``config`` (shared training supports,
        dense noise); the message says why.
    ConfigError
        When the run would not fit in memory (:func:`~simulator.config.check_memory`).
    NonFiniteError
        When a model output becomes non-finite; the message names the step.
    """
    from .training import record_steps

    if config.engine != "reduced":
        raise ValueError(f"train_reduced() runs engine='reduced'; got engine={config.engine!r}")
    check_reducible(config)
    check_memory(config)                       # refuse before allocating (one line)
    overlap_coords, overlap_inputs = expected_test_overlap(config)
    if overlap_inputs > WARN_TEST_OVERLAP:
        warnings.warn(
            f"reduced engine: test inputs are evaluated on fresh supports, but at d={config.d} "
            f"about {100 * overlap_inputs:.1f}% of real test inputs would touch a trained "
            f"coordinate (expected test_overlap_fraction {overlap_coords:.4f}); "
            f"engine='full' includes them", ReducedTestWarning, stacklevel=2)
    R, n = config.n_seeds, config.n
    seeds = np.array(config.seeds, dtype=np.int64)
    rec_steps = record_steps(config.steps, config.record_every)
    buf = allocate_recorded(config, rec_steps.size)
    per_run = {name: np.empty((R, n)) for name in ("y", "y_clean", "xi_l1", "xi_l2")}
    per_run["signal_position"] = np.empty((R, n), dtype=np.int64)
    underflow_step = np.full((R, n), -1, dtype=np.int64)
    final = []
    size = chunk_size(config)
    chunks = [slice(a, min(a + size, R)) for a in range(0, R, size)]
    bar = Progress(config.steps * len(chunks), f"{config.optimizer} x{R} (reduced)",
                   enabled=progress)
    for ci, rs in enumerate(chunks):
        batch = build_reduced_batch(config, seeds[rs])
        QKs, QKn, Vs, Vh, c = batch.QKs, batch.QKn, batch.Vs, batch.Vh, batch.c
        optimizer = make_reduced_optimizer(config, batch.mag)
        clean = bool((c == 1.0).all())
        under = underflow_step[rs].T                  # (n, R_chunk) view
        if isinstance(optimizer, SignGD):
            _run_signgd(config, batch, clean, buf, rs, rec_steps, under,
                        lambda t: bar.update(ci * config.steps + t),
                        speculate=c.shape[-1] <= SPECULATE_MAX_RUNS)
        else:
            _run_steps(config, batch, optimizer, clean, buf, rs, rec_steps, under,
                       lambda t: bar.update(ci * config.steps + t))
        _finish_records(buf, rs, batch)
        per_run["y"][rs], per_run["y_clean"][rs] = batch.y.T, batch.y_clean.T
        per_run["signal_position"][rs] = batch.signal_position.T
        per_run["xi_l1"][rs] = batch.mag.l1.T
        per_run["xi_l2"][rs] = np.sqrt(batch.mag.l2sq).T
        final.append({"Vs": Vs[0].copy(), "Vn": (c * Vh).T,
                      "Qs": QKs[0, :, 0].T, "Ks": QKs[1, :, 0].T,
                      "Qn": (c * QKn[0]).transpose(2, 0, 1), "Kn": (c * QKn[1]).transpose(2, 0, 1)})
    bar.close()
    arrays = {"step": rec_steps, **buf, "seeds": seeds, **per_run,
              "shared_coordinates": np.zeros((R, n), dtype=np.int64),
              "underflow_step": underflow_step,
              "test_overlap_fraction": np.full(R, overlap_coords)}
    state = {name: np.concatenate([part[name] for part in final]) for name in final[0]}
    return ReducedResult(History(config, arrays), state, overlap_inputs)


def _check_margins(t0: int, margin: np.ndarray, under: np.ndarray, batch: ReducedBatch) -> None:
    """Non-finite check and first float64 underflow of ``l'`` for margins
    ``(n, R, J)`` of the steps ``t0, t0 + 1, ...``."""
    if np.maximum.reduce(np.abs(margin), axis=None) <= 700.0:
        return                                        # finite, and no l' near underflow
    if not math.isfinite(float(margin.sum())):
        bad = ~np.isfinite(margin)
        j = int(np.argmax(bad.any(axis=(0, 1))))
        _raise_non_finite(t0 + j, margin[..., j], batch)
    if margin.max() > 700.0:                          # l' may underflow to 0 (margin > ~745)
        zero = loss_derivative(margin) == 0.0
        newly = zero.any(-1) & (under < 0)
        under[newly] = (t0 + np.argmax(zero, axis=-1))[newly]


def _run_steps(config, batch, optimizer, clean, buf, rs, rec_steps, under, on_step) -> None:
    """The plain loop: one vectorized step of the chunk's runs at a time."""
    QKs, QKn, Vs, Vh, c = batch.QKs, batch.QKn, batch.Vs, batch.Vh, batch.c
    start = time.perf_counter()
    opt_state, k = None, 0
    for t in range(config.steps + 1):
        att = attention(QKs, QKn, Vs, Vh, c)
        _check_margins(t, att.margin[..., None], under, batch)
        if k < rec_steps.size and rec_steps[k] == t:
            _record_state(buf, [k], rs, QKs[..., None], QKn[..., None], Vs[..., None],
                          Vh[..., None], att.margin[..., None], att.S_sig[..., None],
                          att.S_noise[..., None])
            buf["wall_time"][k] += time.perf_counter() - start
            k += 1
        if t == config.steps:
            break
        if optimizer.exact_signs:
            grad = gradient_signs(att, QKs, QKn, Vs, Vh, c, clean=clean)
        else:
            grad = gradient(att, QKs, QKn, Vs, Vh, c, config.m_v)
        if opt_state is None:
            opt_state = optimizer.init_state(grad)
        step, opt_state = optimizer.step(grad, opt_state, t)
        QKn -= step.QKn
        QKs -= step.QKs
        Vh -= step.Vh
        Vs -= step.Vs
        on_step(t + 1)


def _run_signgd(config, batch, clean, buf, rs, rec_steps, under, on_step, *,
                speculate: bool) -> None:
    """SignGD on the flat state (:func:`~simulator.reduced_dynamics.signgd_direction`),
    step by step or, with ``speculate``, in sign-stable stretches (exact).

    A SignGD step ``Delta_t`` is fixed by signs, which change at a few hundred of
    the 4000 steps of the default run. Given the state ``X_t`` and its step
    ``Delta_t``, the states ``X_{t+j} = X_t - j Delta_t`` for ``j = 1..K`` are
    evaluated in one vectorized pass (``K`` folded into the run axis) together with
    their own steps: every candidate state is evaluated, none is extrapolated. If
    the first step that differs from ``Delta_t`` is at ``t + J`` (``J = K`` if none
    does), then ``X_{t+1} .. X_{t+J}`` are the true states (each step before them
    was ``Delta_t``), they are checked and recorded, and the loop continues from
    ``X_{t+J}`` with the step already computed there. ``K`` doubles after a stretch
    without change (up to :data:`STRETCH_MAX`) and restarts from ``2 J`` after a
    change. The result equals the step-by-step loop up to the rounding of
    ``X_t - j Delta_t`` against ``j`` repeated subtractions.
    """
    m_k, n, steps = config.m_k, config.n, config.steps
    c = batch.c
    R = c.shape[-1]
    size = state_size(m_k, n)
    x = flat_state(np.empty((size, R)), m_k, n)      # [Qh, Kh, Qs, Ks, Vh, Vs]
    x.QKn[...], x.QKs[...], x.Vh[...], x.Vs[...] = batch.QKn, batch.QKs, batch.Vh, batch.Vs
    eta_l1, eta_mu = config.eta * batch.mag.l1, config.eta * config.mu_norm
    d = flat_state(np.empty((size, R)), m_k, n)      # the step at x: X <- X - D
    X, D = x.X, d.X
    start = time.perf_counter()
    k = 0                                             # next record

    def record(t0, Xs, margin, S):                   # trailing axis J: steps t0, t0 + 1, ...
        nonlocal k
        k1 = k
        while k1 < rec_steps.size and rec_steps[k1] < t0 + margin.shape[-1]:
            k1 += 1
        if k1 > k:
            js = rec_steps[k:k1] - t0
            _record_flat(buf, slice(k, k1), rs, Xs[..., js], margin[..., js], S[..., js],
                         m_k, n)
            buf["wall_time"][k:k1] += time.perf_counter() - start
            k = k1

    margin, S = signgd_direction(x, c, eta_l1, eta_mu, clean=clean, out=d)
    _check_margins(0, margin[..., None], under, batch)
    record(0, X[..., None], margin[..., None], S[..., None])
    values = not clean                                # value rows of D: constant if clean
    t, K, work = 0, 8, {}
    while t < steps:
        if not speculate:
            X -= D
            t += 1
            margin, S = signgd_direction(x, c, eta_l1, eta_mu, clean=clean, out=d,
                                         values=values)
            _check_margins(t, margin[..., None], under, batch)
            if k < rec_steps.size and rec_steps[k] == t:
                record(t, X[..., None], margin[..., None], S[..., None])
            on_step(t)
            continue
        K = min(K, steps - t)
        if K not in work:                             # buffers and per-run constants
            xc, dc = (flat_state(np.empty((size, R * K)), m_k, n) for _ in range(2))
            dc.Vh[...], dc.Vs[...] = np.repeat(d.Vh, K, -1), np.repeat(d.Vs, K, -1)
            work[K] = (xc, dc, np.repeat(c, K, -1), np.repeat(eta_l1, K, -1),
                       np.arange(1.0, K + 1.0))
        xc, dc, cK, eta_l1K, j = work[K]
        Xc, Dc = xc.X.reshape(size, R, K), dc.X.reshape(size, R, K)
        np.multiply(D[..., None], j, out=Xc)
        np.subtract(X[..., None], Xc, out=Xc)         # (S, R, K) X_{t+j} = X_t - j Delta_t
        mc, Sc = signgd_direction(xc, cK, eta_l1K, eta_mu, clean=clean, out=dc,
                                  values=values)
        changed = np.logical_or.reduce(np.not_equal(Dc, D[..., None]).reshape(-1, K),
                                       axis=0)        # (K,) step at t + j is not Delta_t
        first = int(changed.argmax())
        J = first + 1 if changed[first] else K
        mc = mc.reshape(n, R, K)[..., :J]
        _check_margins(t + 1, mc, under, batch)
        record(t + 1, Xc[..., :J], mc, Sc.reshape(2, 2, n, R, K)[..., :J])
        X[...], D[...] = Xc[..., J - 1], Dc[..., J - 1]
        t += J
        K = min(2 * K, STRETCH_MAX) if J == K else 2 * J
        on_step(t)
    batch.QKn[...], batch.QKs[...], batch.Vh[...], batch.Vs[...] = x.QKn, x.QKs, x.Vh, x.Vs


def _record_flat(buf, ks, rs, X, margin, S, m_k, n) -> None:
    """:func:`_record_state` from flat states ``X (S, R, J)``, margins ``(n, R, J)``
    and softmax ``S (2, 2, n, R, J)`` (:func:`~simulator.reduced_dynamics.signgd_direction`)."""
    R, J = X.shape[1:]
    x = flat_state(X.reshape(-1, R * J), m_k, n)
    QKn, QKs, Vh, Vs = (v.reshape(v.shape[:-1] + (R, J)) for v in x[1:])
    _record_state(buf, ks, rs, QKs, QKn, Vs, Vh, margin, S[1], S[0])


def _raise_non_finite(t: int, margin: np.ndarray, batch: ReducedBatch) -> None:
    from .training import NonFiniteError

    bad = np.argwhere(~np.isfinite(margin))
    if bad.size:
        i, r = bad[0]
        raise NonFiniteError(
            f"non-finite output at step {t} (run seed {batch.seeds[r]}, sample {i}): "
            f"margin = {float(margin[i, r])}; lower eta or sigma_0")


def _record_state(buf, ks, rs, QKs, QKn, Vs, Vh, margin, S_sig, S_noise) -> None:
    """Copy the states of records ``ks`` into the history buffers. Every array has
    the internal layout with a trailing axis ``J = len(ks)`` (signal frame; the
    derived arrays are filled in by :func:`_finish_records`)."""
    buf["Qs"][ks, rs] = QKs[0, :, 0].transpose(2, 1, 0)          # (J, R, m_k)
    buf["Ks"][ks, rs] = QKs[1, :, 0].transpose(2, 1, 0)
    buf["Qn"][ks, rs] = QKn[0].transpose(3, 2, 0, 1)             # (J, R, m_k, n) Qh for now
    buf["Kn"][ks, rs] = QKn[1].transpose(3, 2, 0, 1)
    buf["Vs"][ks, rs] = Vs[0].T                                  # (J, R)
    buf["Vn"][ks, rs] = Vh.transpose(2, 1, 0)                    # (J, R, n) Vh for now
    buf["margin"][ks, rs] = margin.transpose(2, 1, 0)
    buf["softmax"][ks, rs, :, :, 0] = S_sig.transpose(3, 2, 1, 0)     # (J, R, n, l) S_l,signal
    buf["softmax"][ks, rs, :, :, 1] = S_noise.transpose(3, 2, 1, 0)   # S_l,noise


def _finish_records(buf, rs, batch: ReducedBatch) -> None:
    """Derived arrays of a chunk, vectorized over all its records: the history frame
    ``Qn = c Qh`` (etc.), ``l'``, training loss and error, and the test metrics."""
    c = batch.c.T                                     # (R, n)
    buf["Qn"][:, rs] *= c[None, :, None, :]
    buf["Kn"][:, rs] *= c[None, :, None, :]
    buf["Vn"][:, rs] *= c[None]
    margin = buf["margin"][:, rs]                     # (T, R, n)
    buf["lprime"][:, rs] = loss_derivative(margin)
    buf["train_loss"][:, rs] = logistic_loss(margin).mean(-1)
    buf["train_error"][:, rs] = (margin <= 0).mean(-1)
    T, R_chunk = margin.shape[0], margin.shape[1]
    n_test = batch.test.y.shape[1]
    block = max(1, CHUNK_BYTES // (80 * R_chunk * n_test))
    for a in range(0, T, block):
        ts = slice(a, min(a + block, T))
        Qs = buf["Qs"][ts, rs].transpose(1, 2, 0)     # (R, m_k, T_block)
        Ks = buf["Ks"][ts, rs].transpose(1, 2, 0)
        Vs = buf["Vs"][ts, rs].T[:, None, :]          # (R, 1, T_block)
        for name, value in held_out_metrics(Qs, Ks, Vs, batch.test).items():
            buf[name][ts, rs] = value.T
