"""The full engine: trains the weights ``W`` on the active basis of each run.

A step is ``W <- W - eta * P(grad L)`` with ``grad L`` from
:func:`simulator.model.loss_and_gradient`, the function the finite-difference tests
prove, and ``P`` the configured optimizer of :mod:`simulator.optimizers`. The data,
the basis and the test inputs come from :mod:`simulator.problem`; the loop and the
recorder from :mod:`simulator.training` and :mod:`simulator.history`.

Held-out metrics are evaluated in blocks of records after the fact: a test input's
projections are fixed (its fresh coordinates keep their initial weights) except for
the columns of ``W`` it touches, coordinate 0 (the signal) and the few trained
coordinates some test noise falls on. At a record the engine keeps those columns
(:meth:`FullEngine.held_out_snapshot`, ``(R, M, C)``), and
:meth:`FullEngine.held_out_metrics` evaluates the model on every test input of a
block of records in one vectorized pass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .model import (HeldOut, LossAndGradient, ModelOptions, SparseInputs, forward_from_projections,
                    held_out_margins, held_out_statistics, loss_and_gradient)
from .optimizers import make_optimizer
from .data import noise_positions
from .problem import TrainingProblem


class TestColumns(NamedTuple):
    """The columns of ``W`` that held-out inputs touch, per run (padded to ``C``)."""

    cols: np.ndarray          # (R, C) basis columns (padding repeats column 0)
    signal: list              # per run: CSR (n_test, C), signal patch on those columns
    noise: list               # per run: CSR (P n_test, C), noise patches on those columns


def test_columns(problem: TrainingProblem) -> TestColumns:
    """The columns of :class:`TestColumns` for every run of ``problem``."""
    R, D = problem.R, problem.D
    parts = []
    for r in range(R):
        if problem.test_signal_in_basis is None:      # the signal patch is y ||mu|| e_0
            n_test = problem.test_y.shape[1]
            signal = sp.csr_matrix((problem.test_signal[r], (np.arange(n_test),
                                    np.zeros(n_test, dtype=np.int64))), shape=(n_test, D))
        else:
            signal = problem.test_signal_in_basis[r].tocsr()
        noise = problem.test_in_basis[r].tocsr()
        cols = np.union1d(np.union1d(signal.indices, noise.indices), [0])
        parts.append((cols, signal[:, cols], noise[:, cols]))
    C = max(p[0].size for p in parts)
    cols = np.zeros((R, C), dtype=np.int64)
    signal, noise = [], []
    for r, (c, s, n) in enumerate(parts):
        cols[r, :c.size] = c
        signal.append(sp.hstack([s, sp.csr_matrix((s.shape[0], C - c.size))], format="csr"))
        noise.append(sp.hstack([n, sp.csr_matrix((n.shape[0], C - c.size))], format="csr"))
    return TestColumns(cols, signal, noise)


#: The step's products go through :class:`~simulator.model.SparseInputs` when at most this
#: fraction of ``X`` is non-zero and the dense products take at least ``SPARSE_MIN_WORK``
#: multiply-adds each: below that the dense products are as fast as SciPy's call overhead
#: (``docs/performance.md``).
SPARSE_MAX_DENSITY = 0.1
SPARSE_MIN_WORK = 200_000


def training_inputs(X: np.ndarray, M: int) -> np.ndarray | SparseInputs:
    """The training inputs ``X`` (R, n, L, D) as the step multiplies them: dense, or
    :class:`~simulator.model.SparseInputs` when sparse and large (the constants above)."""
    if X.size * M >= SPARSE_MIN_WORK * X.shape[0] and np.count_nonzero(X) <= SPARSE_MAX_DENSITY * X.size:
        return SparseInputs.of(X)
    return X


#: Working memory of one block of held-out evaluations.
BLOCK_BYTES = 32 * 2 ** 20


class FullEngine:
    """The engine protocol of :func:`simulator.training.run_loop` on a
    :class:`~simulator.problem.TrainingProblem`."""

    def __init__(self, problem: TrainingProblem):
        config = problem.config
        self.problem, self.layout, self.config = problem, problem.layout, config
        self.optimizer = make_optimizer(config)
        self.options = ModelOptions.of(config)
        self.alpha = config.feature_noise
        self.eta = config.eta
        self.R, self.L = problem.R, problem.L
        self.inputs = training_inputs(problem.X, self.layout.M)
        self.test = test_columns(problem)
        self._held_out = [self._held_out_inputs(r) for r in range(self.R)]
        n_test, M, n, L = problem.test_y.shape[1], self.layout.M, problem.y.shape[1], self.L
        touched = max((h[1][2].size if h else problem.test_y.shape[1]) for h in self._held_out)
        # working memory of a record in a block: the touched test inputs' projections
        # (about 4 copies), the fixed ones' scores (about 8), the snapshot
        per_record = 4 * touched * L * M + 8 * L * L * n_test + 2 * n * L * M
        self.block = max(1, min(32, BLOCK_BYTES // (8 * self.R * per_record)))
        position = problem.signal_position                               # (R, n)
        self.signal_first = bool((position == 0).all())
        # patch index of the signal, then of each noise patch: (1, R, n, L)
        self.order = np.concatenate([position[..., None], noise_positions(position, L)], -1)[None]

    # --- the loop's protocol ---
    def initial_params(self) -> np.ndarray:
        """The weights ``W`` (R, M, D) at initialization (a copy, stored as the products
        read it fastest)."""
        if isinstance(self.inputs, SparseInputs):
            return SparseInputs.weights(self.problem.W0)
        return self.problem.W0.copy()

    def evaluate(self, W: np.ndarray, batch: np.ndarray | None = None) -> LossAndGradient:
        """Forward and backward pass at ``W``: margins ``(R, n)``, softmax, and ``grad L``
        of the mini-batch ``batch`` (all samples when ``None``)."""
        return loss_and_gradient(W, self.inputs, self.problem.y, self.layout, self.options, batch)

    def update(self, W: np.ndarray, ev: LossAndGradient, state, t: int):
        """``W <- W - eta * P(grad L)`` in place; returns the optimizer's new state."""
        G = ev.grad                                                    # (R, M, D)
        if state is None:
            state = self.optimizer.init(G)
        norm = (np.sqrt(np.square(G).sum(axis=(1, 2), keepdims=True))  # (R, 1, 1) ||G||_2
                if self.optimizer.needs_norm else None)
        P, state = self.optimizer.direction(G, state, t, norm)
        if P is G:                                                     # (GD) keep ev.grad
            P = self.eta * P
        else:
            P *= self.eta
        W -= P
        return state

    def snapshot(self, W: np.ndarray, ev: LossAndGradient) -> dict[str, np.ndarray]:
        """What a record needs: the step's margins, projections and softmax and the
        columns of ``W`` the test inputs touch (column 0 is ``W e_0``, the signal
        direction), with ``W mu`` for a general ``mu`` (digits); the loop copies them
        into its block before the next step."""
        snap = {"margin": ev.margin, "proj": ev.forward.proj, "S": ev.forward.att.S,
                "cols": self.held_out_snapshot(W)}       # column 0 of cols is W e_0 = W mu / ||mu||
        if self.problem.signal_direction is not None:                    # W mu, a general mu
            snap["w_signal"] = np.einsum("rmd,rd->rm", W, self.problem.signal_direction)
        return snap

    def record(self, snaps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The section-4 quantities, the softmax in (signal, noise) order and the test
        metrics of a block of ``K`` snapshots (leading axis ``K``).

        With ``x_signal = y_clean mu`` and ``x_noise = xi`` the noise quantities are
        ``y_i W xi_ij``, read off the noise-patch projections and laid out patch-major
        (index ``j n + i``, :mod:`simulator.data`); signal quantities are ``W mu``:
        ``||mu|| W[:, coordinate 0]``, or ``W mu`` for a general ``mu`` (digits).
        """
        problem, lay = self.problem, self.layout
        mu = problem.config.mu_norm if problem.signal_direction is None else 1.0
        proj, S = snaps["proj"], snaps["S"]                              # (K, R, n, L, M) ...
        w_signal = snaps["w_signal"] if "w_signal" in snaps else snaps["cols"][..., 0]   # (K, R, M)
        K, R, n, L, M = proj.shape
        if self.signal_first and L == 2:
            noise_proj = proj[:, :, :, 1:, :]                            # (K, R, n, 1, M)
        else:                                                            # semantic patch order
            order = self.order                                           # (1, R, n, L)
            noise_proj = np.take_along_axis(proj, order[..., 1:, None], axis=3)
            S = np.take_along_axis(S, order[..., :, None], axis=3)
            S = np.take_along_axis(S, order[..., None, :], axis=4)
        yn = problem.y[..., None, None] * noise_proj                     # (K, R, n, P, M) y_i W x_ij
        if self.alpha:                      # x_ij = xi_ij - alpha y_clean mu: add back its mu part
            c = problem.y * problem.stacked("y_clean")                   # (R, n)
            yn = yn + self.alpha * c[..., None, None] * (mu * w_signal)[:, :, None, None, :]
        yn = yn.swapaxes(2, 3).reshape(K, R, n * (L - 1), M)             # patch-major y_i W xi_ij
        return {
            "Vs": mu * (w_signal[..., lay.V] @ lay.value_row),          # <vbar, mu>
            "Vn": yn[..., lay.V] @ lay.value_row,                        # <vbar, y_i xi_i>
            "Qs": mu * w_signal[..., lay.Q],
            "Ks": mu * w_signal[..., lay.K],
            "Qn": yn[..., lay.Q].swapaxes(-1, -2),
            "Kn": yn[..., lay.K].swapaxes(-1, -2),
            "softmax": S,
            **self.held_out_metrics(snaps["cols"]),
        }

    def held_out_snapshot(self, W: np.ndarray) -> np.ndarray:
        """The columns of ``W`` that test inputs touch: ``(R, M, C)`` (a copy)."""
        if self.R == 1:                                   # one index array: a fast gather
            return W[:, :, self.test.cols[0]]
        return np.take_along_axis(W, self.test.cols[:, None, :], axis=2)

    def held_out_projections(self, snaps: np.ndarray, r: int) -> np.ndarray:
        """``W x`` of run ``r``'s test inputs ``(K, n_test, L, M)`` at ``K`` snapshots
        ``(K, R, M, C)``: ``W_0 x`` on fresh coordinates plus the touched columns, in
        semantic patch order (signal, then the noise patches; the model has no
        positional encoding, so the order does not change its output)."""
        signal = self._column_products(self.test.signal[r], snaps, r)       # (K, n, M)
        noise = self._column_products(self.test.noise[r], snaps, r)         # (K, P n, M)
        noise += self.problem.test_frozen[r]                                # W_0 xi off the basis
        K, n, M = signal.shape
        noise = noise.reshape(K, -1, n, M).swapaxes(1, 2)                   # (K, n, P, M)
        return np.concatenate([signal[:, :, None], noise], axis=2)          # (K, n, L, M)

    @staticmethod
    def _column_products(x: sp.csr_matrix, snaps: np.ndarray, r: int) -> np.ndarray:
        """``W x`` on the touched columns, ``(K, n_rows, M)``, for the rows ``x``
        (CSR, n_rows x C) of run ``r`` at ``K`` snapshots ``(K, R, M, C)``."""
        K, R, M, C = snaps.shape
        Wc = snaps[:, r].transpose(2, 0, 1).reshape(C, K * M)            # (C, K M)
        return (x @ Wc).reshape(-1, K, M).swapaxes(0, 1)

    def _held_out_inputs(self, r: int):
        """Run ``r``'s test inputs as :func:`~simulator.model.held_out_margins` needs
        them: ``(fixed, touched)``, the inputs whose noise lies on fresh coordinates
        (signal-frame noise projections, fixed during training) and the indices and
        ``y_clean`` of the others, whose noise projections move with the trained
        columns. ``None`` when the signal patch is not ``y ||mu|| e_0`` (digits) or
        the inputs have more than two patches (the two-patch gap form does not apply)."""
        problem, lay = self.problem, self.layout
        if problem.test_signal_in_basis is not None or self.L > 2:
            return None
        fixed = np.diff(self.test.noise[r].indptr) == 0                  # (n_test,)
        y_clean = problem.test[r].y_clean
        c = problem.test_y[r] * y_clean
        p = y_clean[fixed, None] * problem.test_frozen[r][fixed]         # (n_F, M) y_c W_0 xi
        inputs = HeldOut(p[None, :, lay.Q], p[None, :, lay.K],
                         (p[:, lay.V] @ lay.value_row)[None], c[None, fixed])
        touched = np.flatnonzero(~fixed)
        # the touched inputs' noise in the signal frame, y_clean xi, and its frozen part
        # W_0 y_clean xi on the rows the margins read: [Q; K; value row]
        noise = (sp.diags(y_clean[touched]) @ self.test.noise[r][touched]).tocsr()
        frozen = self._qku_columns(y_clean[touched, None] * problem.test_frozen[r][touched])
        return inputs, (noise, frozen, c[touched])

    def _qku_columns(self, P: np.ndarray) -> np.ndarray:
        """The entries of weights or projections ``P`` (..., M) that the margins read:
        ``[Q (m_k), K (m_k), u = value_row . V]``, ``(..., 2 m_k + 1)`` (a new array)."""
        lay = self.layout
        out = np.empty(P.shape[:-1] + (2 * lay.m_k + 1,))
        out[..., :-1] = P[..., :2 * lay.m_k]
        np.matmul(P[..., lay.V], lay.value_row, out=out[..., -1])
        return out

    def held_out_metrics(self, snaps: np.ndarray) -> dict[str, np.ndarray]:
        """Test loss, error and margin statistics ``(K, R)`` of ``K`` snapshots
        ``(K, R, M, C)``, through :func:`~simulator.model.held_out_margins`: the signal
        quantities come from column 0 of the snapshot; noise projections are fixed
        for inputs on fresh coordinates and ``W_0 xi`` plus the trained columns'
        part for the others. Digits (a general signal patch) and inputs of more than
        two patches go through the inputs' full projections."""
        K, R = snaps.shape[:2]
        lay, mu = self.layout, self.config.mu_norm
        out = {}
        for r in range(R):
            if self._held_out[r] is None:                                # digits, L > 2
                proj = self.held_out_projections(snaps, r)
                margin = self.problem.test_y[r] * forward_from_projections(proj, lay, self.options).f
            else:
                fixed, (noise, frozen, c) = self._held_out[r]
                w0 = snaps[:, r, None, :, 0]                             # (K, 1, M): W e_0
                Qs, Ks = mu * w0[..., lay.Q], mu * w0[..., lay.K]
                Vs = mu * (w0[..., lay.V] @ lay.value_row)                # (K, 1)
                groups = [fixed]
                if c.size:                                               # touched inputs
                    Wc = self._qku_columns(snaps[:, r].transpose(2, 0, 1))   # (C, K, 2 m_k + 1)
                    pn = (noise @ Wc.reshape(Wc.shape[0], -1)).reshape(-1, K, Wc.shape[-1])
                    pn += frozen[:, None, :]                             # y_c W xi, signal frame
                    pn = pn.swapaxes(0, 1)[:, None]                      # (K, 1, n_T, 2 m_k + 1)
                    m_k = lay.m_k
                    groups.append(HeldOut(pn[..., :m_k], pn[..., m_k:2 * m_k], pn[..., -1], c[None]))
                margin = held_out_margins(Qs, Ks, Vs, *groups, options=self.options)[:, 0]  # (K, n_test)
            for name, value in held_out_statistics(margin).items():
                out.setdefault(name, np.empty((K, R)))[:, r] = value
        return out

    def per_run(self) -> dict[str, np.ndarray]:
        """The per-run arrays of the history."""
        problem = self.problem
        return {"seeds": problem.seeds, "y": problem.y,
                "y_clean": problem.stacked("y_clean"), "xi_l1": problem.stacked("xi_l1"),
                "xi_l2": problem.stacked("xi_l2"), "signal_position": problem.signal_position,
                "shared_coordinates": problem.shared_coordinates,
                "test_overlap_fraction": problem.test_overlap_fraction}
