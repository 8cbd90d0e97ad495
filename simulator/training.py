"""The training loop: advances a batch of runs by full-batch optimizer steps
``W <- W - eta * P(grad L)`` and records the history.

The loop owns all state (weights, optimizer state, recording buffers). One step of
all ``R`` runs is one vectorized computation: no Python loop over runs, samples or
neurons. Quantities are computed only at recorded steps, from the forward pass that
the step needs anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .config import SimulationConfig
from .history import History
from .model import Forward, Layout, forward_from_projections, logistic_loss, loss_and_gradient
from .optimizers import make_optimizer
from .problem import TrainingProblem, build_problem, held_out_projections
from .progress import Progress


class NonFiniteError(FloatingPointError):
    """A non-finite value appeared during training (the message names the step)."""


@dataclass
class TrainingResult:
    """A finished batch of runs: its history and final weights (not saved)."""

    history: History
    W: np.ndarray                 # (R, M, D) final weights on the basis
    problem: TrainingProblem


def record_steps(steps: int, record_every: int) -> np.ndarray:
    """Recorded steps: ``0, k, 2k, ...`` and always the last step."""
    return np.union1d(np.arange(0, steps + 1, record_every), [steps])


def theory_quantities(W: np.ndarray, fw: Forward, problem: TrainingProblem) -> dict[str, np.ndarray]:
    """The inner products of ``SETTING.md`` section 4 from the forward cache.

    With ``x_signal = y_clean mu`` and ``x_noise = xi``, the noise quantities are
    ``y_i W xi_i`` read off the noise-patch projections; signal quantities read
    ``||mu|| W[:, coordinate 0]``.
    """
    lay, mu = problem.layout, problem.config.mu_norm
    signal_pos = np.stack([ds.signal_position for ds in problem.train])     # (R, n)
    noise_pos = 1 - signal_pos
    idx = noise_pos[..., None, None]                                         # (R, n, 1, 1)
    noise_proj = np.take_along_axis(fw.proj, idx, axis=2)[:, :, 0, :]       # (R, n, M)
    y = problem.y[..., None]
    yn = y * noise_proj                                                      # (R, n, M)
    w_signal = W[:, :, 0]                                                    # (R, M)
    # softmax in semantic order: patch 0 = signal, 1 = noise
    S = np.stack([fw.S1, fw.S2], axis=-1)                                    # (R, n, L, L)
    perm = np.stack([signal_pos, noise_pos], axis=-1)                        # (R, n, 2)
    S = np.take_along_axis(S, perm[..., :, None], axis=2)
    S = np.take_along_axis(S, perm[..., None, :], axis=3)
    return {
        "Vs": mu * (w_signal[:, lay.Vp].mean(-1) - w_signal[:, lay.Vm].mean(-1)),
        "Vn": yn[..., lay.Vp].mean(-1) - yn[..., lay.Vm].mean(-1),
        "Qs": mu * w_signal[:, lay.Q],
        "Ks": mu * w_signal[:, lay.K],
        "Qn": yn[..., lay.Q].swapaxes(1, 2),
        "Kn": yn[..., lay.K].swapaxes(1, 2),
        "softmax": S,
    }


def held_out_metrics(W: np.ndarray, problem: TrainingProblem) -> dict[str, np.ndarray]:
    """Test loss, test error and test margin statistics, each (R,)."""
    fw = forward_from_projections(held_out_projections(W, problem), problem.layout)
    margin = problem.test_y * fw.f
    return {"test_loss": logistic_loss(margin).mean(-1),
            "test_error": (margin <= 0).mean(-1),
            "test_margin_mean": margin.mean(-1),
            "test_margin_std": margin.std(-1)}


def _check_finite(step: int, margin: np.ndarray, problem: TrainingProblem) -> None:
    bad = ~np.isfinite(margin)
    if bad.any():
        r, i = np.argwhere(bad)[0]
        raise NonFiniteError(
            f"non-finite output at step {step} (run seed {problem.seeds[r]}, sample {i}): "
            f"f = {margin[r, i] * problem.y[r, i]!r}; lower eta or sigma_0")


def _allocate(config: SimulationConfig, T: int) -> dict[str, np.ndarray]:
    R, n, m_k = config.n_seeds, config.n, config.m_k
    shapes = {"wall_time": (T,), "train_loss": (T, R), "train_error": (T, R),
              "test_loss": (T, R), "test_error": (T, R), "test_margin_mean": (T, R),
              "test_margin_std": (T, R), "margin": (T, R, n), "lprime": (T, R, n),
              "Vs": (T, R), "Vn": (T, R, n), "Qs": (T, R, m_k), "Ks": (T, R, m_k),
              "Qn": (T, R, m_k, n), "Kn": (T, R, m_k, n), "softmax": (T, R, n, 2, 2)}
    return {name: np.empty(shape) for name, shape in shapes.items()}


def per_run_arrays(problem: TrainingProblem) -> dict[str, np.ndarray]:
    """The per-run arrays of a history (see :mod:`simulator.history`)."""
    return {"seeds": problem.seeds, "y": problem.y,
            "y_clean": problem.stacked("y_clean"), "xi_l1": problem.stacked("xi_l1"),
            "xi_l2": problem.stacked("xi_l2"),
            "signal_position": problem.stacked("signal_position"),
            "shared_coordinates": problem.shared_coordinates,
            "test_overlap_fraction": problem.test_overlap_fraction}


def train(config: SimulationConfig, *, progress: bool = False,
          problem: TrainingProblem | None = None) -> TrainingResult:
    """Train every run of ``config`` with the full engine and record its history.

    Parameters
    ----------
    config : SimulationConfig
    progress : bool
        Show a progress line on stderr when the run takes more than a few seconds.
    problem : TrainingProblem, optional
        Prebuilt data and initial weights (default: ``build_problem(config)``).

    Raises
    ------
    NonFiniteError
        When a model output becomes non-finite; the message names the step.
    """
    if config.engine != "full":
        raise ValueError(f"train() runs engine='full'; got engine={config.engine!r}")
    problem = build_problem(config) if problem is None else problem
    layout: Layout = problem.layout
    optimizer = make_optimizer(config)
    W = problem.W0.copy()
    state = optimizer.init_state(W)
    rec_steps = record_steps(config.steps, config.record_every)
    buf = _allocate(config, rec_steps.size)
    underflow_step = np.full(problem.y.shape, -1, dtype=np.int64)
    bar = Progress(config.steps, f"{config.optimizer} x{config.n_seeds}", enabled=progress)
    start = time.perf_counter()
    k = 0  # next record slot
    for t in range(config.steps + 1):
        lg = loss_and_gradient(W, problem.X, problem.y, layout)
        _check_finite(t, lg.margin, problem)
        newly = (lg.lprime == 0.0) & (underflow_step < 0)
        if newly.any():
            underflow_step[newly] = t
        if k < rec_steps.size and rec_steps[k] == t:
            row = {"wall_time": time.perf_counter() - start, "train_loss": lg.loss,
                   "train_error": (lg.margin <= 0).mean(-1), "margin": lg.margin,
                   "lprime": lg.lprime, **theory_quantities(W, lg.forward, problem),
                   **held_out_metrics(W, problem)}
            for name, value in row.items():
                buf[name][k] = value
            k += 1
        if t == config.steps:
            break
        P, state = optimizer.direction(lg.grad, state, t)
        W -= config.eta * P
        bar.update(t + 1)
    bar.close()
    arrays = {"step": rec_steps, **buf, **per_run_arrays(problem), "underflow_step": underflow_step}
    return TrainingResult(History(config, arrays), W, problem)
