"""The training loop: advances a batch of runs by full-batch optimizer steps
``W <- W - eta * P(grad L)`` and records the history.

The loop owns all state (weights, optimizer state, recording buffers). One step of
all ``R`` runs is one vectorized computation: no Python loop over runs, samples or
neurons. Quantities are computed only at recorded steps, from the forward pass that
the step needs anyway.

The weights are held as :class:`~simulator.problem.EngineLayout` describes: each
sample's own noise coordinates in a block (``W x`` is ``|x_i| @ Wb[i]``, and a SignGD
step moves every slot of block ``i`` by the same ``-eta sign(dL/d(W x_i))``, kept as one
shift per sample, see ``_Step``), the rest (coordinate 0,
shared coordinates) in a small dense part. This is the same SignGD / GD / Adam step
on the same weights, at ``n (s + 1) M`` instead of ``n L D M`` multiply-adds; the
weights on the basis, ``(R, M, D)``, are written back for records and at the end.
See ``docs/performance.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .config import SimulationConfig, check_memory
from .history import History, allocate_recorded
from .model import (Forward, Layout, forward_from_projections, held_out_statistics, logistic_loss,
                    output_gradient_coefficients)
from .optimizers import SignGD, make_optimizer
from .problem import (L, EngineLayout, TrainingProblem, build_problem, engine_layout,
                      held_out_projections)
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
    ``||mu|| W[:, coordinate 0]``, or ``W mu`` when the problem has a
    ``signal_direction`` ``mu`` (real images, :mod:`simulator.digits`).
    """
    lay = problem.layout
    signal_pos = problem.stacked("signal_position")                        # (R, n)
    first = bool((signal_pos == 0).all())
    perm = np.stack([signal_pos, 1 - signal_pos], axis=-1)                   # (R, n, 2)
    if problem.signal_direction is None:                  # mu = ||mu|| e_0
        mu, w_signal = problem.config.mu_norm, W[:, :, 0]                    # (R, M)
    else:                                                  # a general mu (simulator/digits.py)
        mu, w_signal = 1.0, np.einsum("rmd,rd->rm", W, problem.signal_direction)  # <w, mu>
    if first:
        noise_proj = fw.proj[:, :, 1, :]                                     # (R, n, M)
    else:
        noise_proj = np.take_along_axis(fw.proj, perm[..., 1, None, None], axis=2)[:, :, 0, :]
    yn = problem.y[..., None] * noise_proj                                   # (R, n, M)
    # softmax in semantic order: patch 0 = signal, 1 = noise
    S = np.stack([fw.S1, fw.S2], axis=-1)                                    # (R, n, L, L)
    if not first:
        S = np.take_along_axis(S, perm[..., :, None], axis=2)
        S = np.take_along_axis(S, perm[..., None, :], axis=3)

    def mean(a):  # mean over the last axis, as ndarray.mean computes it
        return np.add.reduce(a, axis=-1) / a.shape[-1]

    return {
        "Vs": mu * (mean(w_signal[:, lay.Vp]) - mean(w_signal[:, lay.Vm])),
        "Vn": mean(yn[..., lay.Vp]) - mean(yn[..., lay.Vm]),
        "Qs": mu * w_signal[:, lay.Q],
        "Ks": mu * w_signal[:, lay.K],
        "Qn": yn[..., lay.Q].swapaxes(1, 2),
        "Kn": yn[..., lay.K].swapaxes(1, 2),
        "softmax": S,
    }


def held_out_metrics(W: np.ndarray, problem: TrainingProblem) -> dict[str, np.ndarray]:
    """Test loss, test error and test margin statistics, each (R,)."""
    fw = forward_from_projections(held_out_projections(W, problem), problem.layout)
    return held_out_statistics(problem.test_y * fw.f)


def _record(W: np.ndarray, engine: "_Step", eng: EngineLayout,
            problem: TrainingProblem) -> dict[str, np.ndarray]:
    """The recorded quantities and test metrics of the engine's current weights,
    written back into the basis weights ``W`` (R, M, D) first."""
    _store_weights(engine.blocks(), engine.Wd, eng, W)
    return {**theory_quantities(W, engine.fw, problem), **held_out_metrics(W, problem)}


def _check_finite(step: int, margin: np.ndarray, problem: TrainingProblem) -> None:
    bad = ~np.isfinite(margin)
    if bad.any():
        r, i = np.argwhere(bad)[0]
        raise NonFiniteError(
            f"non-finite output at step {step} (run seed {problem.seeds[r]}, sample {i}): "
            f"f = {float(margin[r, i] * problem.y[r, i])}; lower eta or sigma_0")


# ---------------------------------------------------------------------------
# the engine's storage of the trained weights (problem.EngineLayout)
# ---------------------------------------------------------------------------

def _engine_arrays(R: int, n: int, M: int, eng: EngineLayout):
    """Zeroed engine arrays: blocks ``(R, n, B, M)`` and dense part ``(R, M, Dd)``."""
    return np.zeros((R, n, eng.B, M)), np.zeros((R, M, eng.Dd))


def _joined(Wb: np.ndarray, Wd: np.ndarray) -> np.ndarray:
    """Blocks and dense part as one ``(R, 1, K)`` array (a copy): per-run reductions
    over the last two axes (NormGD) see every trained weight of a run once."""
    R = Wb.shape[0]
    return np.concatenate([Wb.reshape(R, 1, -1), Wd.reshape(R, 1, -1)], axis=-1)


def _load_weights(W: np.ndarray, eng: EngineLayout, Wb: np.ndarray, Wd: np.ndarray) -> None:
    """Copy basis weights ``W`` (R, M, D) into the engine's blocks and dense part."""
    r = np.nonzero(eng.block_real)
    Wb[r] = W[r[0], :, eng.block_cols[r]] * eng.block_sign[r]
    r = np.nonzero(eng.dense_real)
    Wd.transpose(0, 2, 1)[r] = W[r[0], :, eng.dense_cols[r]]


def _store_weights(Wb: np.ndarray, Wd: np.ndarray, eng: EngineLayout, W: np.ndarray) -> None:
    """Write the engine's weights back into basis weights ``W`` (R, M, D)."""
    r = np.nonzero(eng.block_real)
    W[r[0], :, eng.block_cols[r]] = Wb[r] * eng.block_sign[r]
    r = np.nonzero(eng.dense_real)
    W[r[0], :, eng.dense_cols[r]] = Wd.transpose(0, 2, 1)[r]


def _block_row_view(block_row: np.ndarray, proj: np.ndarray):
    """``f(add, A)``: adds ``add`` (R, n, 1, M) to each sample's block-row projection
    in ``proj`` and/or returns the block rows of ``A`` (R, n, L, M) as (R, n, M)."""
    R, n = block_row.shape
    if (block_row == block_row.flat[0]).all():              # the usual case: one patch
        l = int(block_row.flat[0])
        rows = proj[:, :, l, :]

        def view(add, A=None):
            if add is not None:
                np.add(rows, add[:, :, 0, :], out=rows)
            return None if A is None else A[:, :, l, :]
    else:                                                   # signal_position='random'
        idx = (np.arange(R * n) * L + block_row.ravel())

        def view(add, A=None):
            if add is not None:
                proj.reshape(R * n * L, -1)[idx] += add.reshape(R * n, -1)
            return None if A is None else A.reshape(R * n * L, -1)[idx].reshape(R, n, -1)
    return view


class _Step:
    """The forward pass and the SignGD step of a batch, on the engine's arrays (owned
    by :func:`train`). ``advance(step)`` takes the SignGD step of the last forward
    pass (if ``step``), then the forward pass of the new weights, writing margins and
    ``l'`` into the loop's arrays.

    A SignGD step moves every slot of sample ``i``'s block by the same
    ``-eta sign(A_i)`` (:class:`EngineLayout`), so the blocks are kept as
    ``Wb = Wb_base + Wb_shift`` with a per-sample shift ``Wb_shift`` (R, n, 1, M):
    the step updates the shift only, and the block row's projection is
    ``|x_i| @ Wb_base[i] + ||x_i||_1 Wb_shift[i]``, with ``|x_i| @ Wb_base[i]`` cached
    until ``Wb_base`` changes. A step costs ``O(n M)`` per run instead of touching all
    ``n s M`` block weights (the same weights, rounded in another order).
    """

    def __init__(self, problem, eng, Wb, Wd, Gb, Gd, proj, margin, lprime, eta):
        self.layout, self.eta, self.n = problem.layout, eta, problem.y.shape[1]
        self.y, self.margin, self.lprime = problem.y, margin, lprime
        self.X_dense, self.block_abs, self.block_abs_t = eng.X_dense, eng.block_abs, eng.block_abs_t
        self.Wb, self.Wd, self.Gb, self.Gd = Wb, Wd, Gb, Gd
        self.Wd_T = Wd.transpose(0, 2, 1)               # (R, Dd, M)
        self.proj = proj                                # (R, n, L, M)
        self.proj_rows = proj.reshape(proj.shape[0], -1, proj.shape[-1])   # (R, n L, M)
        self.block_row = _block_row_view(eng.block_row, proj)
        # the usual case: every block row is patch l and the dense part leaves those rows
        # at 0 (no shared coordinate), so |x_i| @ Wb[r, i] can be written in place
        l = int(eng.block_row.flat[0]) if eng.block_row.size else 0
        dense_rows = eng.X_dense.reshape(proj.shape[0], -1, L, eng.Dd)[:, :, l, :]
        self.block_out = (proj[:, :, l:l + 1, :] if (eng.block_row == l).all()
                          and not dense_rows.any() else None)
        self.abs_A = np.empty(proj.shape[:2] + proj.shape[-1:])   # (R, n, M)
        self.Wb_shift = np.zeros(proj.shape[:2] + (1, proj.shape[-1]))  # (R, n, 1, M)
        self.block_l1 = eng.block_abs.sum(-1, keepdims=True)    # (R, n, 1, 1) ||x_i||_1 on blocks
        self.base_proj = np.empty_like(self.Wb_shift)           # (R, n, 1, M) |x_i| @ Wb_base[i]
        self.base_stale = True
        # SignGD on a block is Wb <- Wb - eta sign(A_i) (EngineLayout) unless |x A_i|
        # underflows to 0 for a non-zero A_i; below this |A_i| the step is taken the long way
        self.tiny_A = 2.0 ** -1072 / eng.block_abs_min
        self.fw = None

    def forward(self) -> None:
        """proj = W x (dense part, then each sample's block row), margins, l'."""
        np.matmul(self.X_dense, self.Wd_T, out=self.proj_rows)   # (R, n L, M)
        if self.base_stale:
            np.matmul(self.block_abs, self.Wb, out=self.base_proj)   # |x_i| @ Wb_base[i]
            self.base_stale = False
        if self.block_out is not None:                           # 0 + |x_i| @ Wb[r, i]
            np.multiply(self.Wb_shift, self.block_l1, out=self.block_out)
            self.block_out += self.base_proj
        else:                                                    # += |x_i| @ Wb[r, i]
            self.block_row(self.base_proj + self.Wb_shift * self.block_l1)
        self.fw = forward_from_projections(self.proj, self.layout)
        np.multiply(self.y, self.fw.f, out=self.margin)          # (R, n)
        lprime = self.lprime                                     # l' = -expit(-margin)
        expit(np.negative(self.margin, out=lprime), out=lprime)
        np.negative(lprime, out=lprime)

    def gradient(self) -> np.ndarray:
        """dL/dW of the last forward pass on the dense part (into Gd); returns
        ``A_block`` (R, n, M), the gradient with respect to each block row's
        projection (``dL/dWb[r, i, j] = |x_ij| A_block[r, i]``)."""
        dL_df = self.y * self.lprime                    # (R, n) dL/df = y l' / n
        dL_df /= self.n
        A = output_gradient_coefficients(self.fw, dL_df, self.layout)   # (R, n, L, M)
        r = A.shape[0]
        np.matmul(A.reshape(r, -1, A.shape[-1]).transpose(0, 2, 1), self.X_dense, out=self.Gd)
        A_block = self.block_row(None, A)               # (R, n, M) dL/d(block row proj)
        return A_block

    def advance(self, step: bool) -> None:
        if step:
            A_block = self.gradient()
            Gd = self.Gd
            np.sign(Gd, out=Gd)
            Gd *= self.eta
            self.Wd -= Gd
            if _blocks_factor(A_block, self.tiny_A, self.abs_A):
                sA = np.sign(A_block)                   # (R, n, M)
                sA *= self.eta
                self.Wb_shift -= sA[:, :, None, :]      # every slot of block i moves alike
            else:
                self.settle()
                Gb = np.multiply(self.block_abs_t, A_block[:, :, None, :], out=self.Gb)
                np.sign(Gb, out=Gb)
                Gb *= self.eta
                self.Wb -= Gb
                self.base_stale = True
        else:
            self.base_stale = True                      # the caller may have moved Wb
        self.forward()

    def settle(self) -> None:
        """Fold the shift into the stored blocks: ``Wb_base <- Wb_base + Wb_shift``."""
        if self.Wb_shift.any():
            self.Wb += self.Wb_shift
            self.Wb_shift[...] = 0.0
            self.base_stale = True

    def blocks(self) -> np.ndarray:
        """The block weights ``Wb_base + Wb_shift`` (a new array; the state is unchanged)."""
        return self.Wb + self.Wb_shift


def _blocks_factor(A_block: np.ndarray, tiny_A: float, out: np.ndarray | None = None) -> bool:
    """Whether ``sign(|x| A) = sign(A)`` on every block slot: no non-zero entry of
    ``A_block`` is so small that ``|x| A`` underflows to 0."""
    a = np.abs(A_block, out=out)
    if np.minimum.reduce(a, axis=None) >= tiny_A:
        return True
    return bool(((a >= tiny_A) | (a == 0.0)).all())


def per_run_arrays(problem: TrainingProblem) -> dict[str, np.ndarray]:
    """The per-run arrays of a history (see :mod:`simulator.history`)."""
    return {"seeds": problem.seeds, "y": problem.y,
            "y_clean": problem.stacked("y_clean"), "xi_l1": problem.stacked("xi_l1"),
            "xi_l2": problem.stacked("xi_l2"),
            "signal_position": problem.stacked("signal_position"),
            "shared_coordinates": problem.shared_coordinates,
            "test_overlap_fraction": problem.test_overlap_fraction}


@np.errstate(over="ignore", invalid="ignore")  # non-finite values raise NonFiniteError instead
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
    ConfigError
        When the run would not fit in memory (:func:`~simulator.config.check_memory`).
    NonFiniteError
        When a model output becomes non-finite; the message names the step.
    """
    if config.engine != "full":
        raise ValueError(f"train() runs engine='full'; got engine={config.engine!r}")
    if problem is None:
        check_memory(config)                   # refuse before allocating (one line)
        problem = build_problem(config)
    layout: Layout = problem.layout
    optimizer = make_optimizer(config)
    R, n = problem.y.shape
    eng = engine_layout(problem)
    W = problem.W0.copy()                  # (R, M, D); written from Wb, Wd when recording
    Wb, Wd = _engine_arrays(R, n, layout.M, eng)
    _load_weights(W, eng, Wb, Wd)
    Gb, Gd = _engine_arrays(R, n, layout.M, eng)
    state = optimizer.init_state(_joined(Wb, Wd))
    nb = Wb.size // R
    signgd = isinstance(optimizer, SignGD)
    proj = np.empty((R, n, L, layout.M))
    margin, lprime = np.empty((R, n)), np.empty((R, n))
    engine = _Step(problem, eng, Wb, Wd, Gb, Gd, proj, margin, lprime, config.eta)
    rec_steps = record_steps(config.steps, config.record_every)
    buf = allocate_recorded(config, rec_steps.size)
    underflow_step = np.full(problem.y.shape, -1, dtype=np.int64)
    bar = Progress(config.steps, f"{config.optimizer} x{config.n_seeds}", enabled=progress)
    start = time.perf_counter()
    k = 0  # next record slot
    for t in range(config.steps + 1):
        # the step of t - 1 (no gradient after the last forward pass), then forward at t
        if t > 0 and not signgd:
            A_block = engine.gradient()                 # (R, n, M)
            np.multiply(eng.block_abs_t, A_block[:, :, None, :], out=Gb)
            P, state = optimizer.direction(_joined(Gb, Gd), state, t - 1)
            P = config.eta * P                          # (R, 1, K)
            Wb -= P[:, 0, :nb].reshape(Wb.shape)
            Wd -= P[:, 0, nb:].reshape(Wd.shape)
        engine.advance(signgd and t > 0)                # margin, lprime of W_t
        if not np.isfinite(np.add.reduce(margin, axis=None)):
            _check_finite(t, margin, problem)
        if not lprime.all():
            newly = (lprime == 0.0) & (underflow_step < 0)
            underflow_step[newly] = t
        if k < rec_steps.size and rec_steps[k] == t:
            row = {"wall_time": time.perf_counter() - start,
                   "train_loss": logistic_loss(margin).mean(-1),
                   "train_error": (margin <= 0).mean(-1), "margin": margin,
                   "lprime": lprime, **_record(W, engine, eng, problem)}
            if not np.isfinite(row["test_margin_mean"]).all():
                raise NonFiniteError(f"non-finite test output at step {t}; lower eta or sigma_0")
            for name, value in row.items():
                buf[name][k] = value
            k += 1
        if t < config.steps:
            bar.update(t + 1)
    bar.close()
    _store_weights(engine.blocks(), Wd, eng, W)
    arrays = {"step": rec_steps, **buf, **per_run_arrays(problem), "underflow_step": underflow_step}
    return TrainingResult(History(config, arrays), W, problem)
