"""The two-layer transformer, once: forward pass and hand-derived backward pass
(``docs/theory.md`` section 2).

Both engines evaluate the model through :func:`attend` and differentiate it through
:func:`attend_backward`: the full engine on the patch projections ``W x_l`` of its
weights, the reduced engine on the same projections written in the theory's
quantities. The finite-difference tests prove these functions, and these functions
train.

All weights of a run are stacked into one array ``W`` of shape ``(R, M, D)`` with rows
``[W_Q (m_k); W_K (m_k); W_{V,+1} (m_v); W_{V,-1} (m_v)]`` (see :func:`split`).
Inputs are ``X`` of shape ``(R, n, L, D)``.

Forward (one sample, patches ``x_1 .. x_L``)::

    q_l = W_Q x_l,  k_l = W_K x_l                        # (m_k,)
    u_k = <vbar, x_k>,  vbar = mean_r w_{V,+1,r} - mean_r w_{V,-1,r}
    z_lk = tau <q_l, k_k>                                 # score scale tau (1: no scaling)
    S_lk = exp(z_lk) / sum_k' exp(z_lk')                  # softmax over keys k
    f = rho sum_l sum_k S_lk u_k                          # pooling: rho = 1 (sum) or 1/L (mean)

Loss ``L = (1/n) sum_i log(1 + exp(-y_i f_i))`` and its derivative
``l'_i = -1 / (1 + exp(y_i f_i))``.

Backward (one line per chain-rule step; ``g = dL/df``)::

    dL_df     = y l' / n                                  # (1/B on a mini-batch's samples)
    dL_du_k   = rho g sum_l S_lk
    dL_dz_lk  = rho g S_lk sum_k' S_lk' (u_k - u_k')      # cancellation free
    dL_dq_l   = tau sum_k dL_dz_lk k_k
    dL_dk_k   = tau sum_l dL_dz_lk q_l
    dL_dWV+_r = sum_k dL_du_k x_k / m_v,   dL_dWV-_r = -dL_dWV+_r
    dL_dW     = sum_{i,l} dL_dproj_il x_il^T               # one batched matmul

``dL_dz`` is formed from the differences ``u_k - u_k'`` weighted by products of softmax
outputs, never as ``S_lk (u_k - sum_k' S_lk' u_k')``: that generic form subtracts two
nearly equal numbers and loses ``S_lk`` once it is below ``1e-16``, which decides whole
SignGD steps in Stage IV (``docs/theory.md`` section 8). With two patches it is
``dL_dz_l2 = g S_l1 S_l2 (u_2 - u_1) = -dL_dz_l1``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
from scipy.special import expit


@dataclasses.dataclass(frozen=True)
class Layout:
    """Row slices of the stacked weights ``W`` (R, M, D), each built on first use and
    then read as a plain attribute (the step reads them several times)."""

    m_k: int
    m_v: int

    @functools.cached_property
    def Q(self) -> slice:
        return slice(0, self.m_k)

    @functools.cached_property
    def K(self) -> slice:
        return slice(self.m_k, 2 * self.m_k)

    @functools.cached_property
    def Vp(self) -> slice:
        return slice(2 * self.m_k, 2 * self.m_k + self.m_v)

    @functools.cached_property
    def Vm(self) -> slice:
        return slice(2 * self.m_k + self.m_v, 2 * self.m_k + 2 * self.m_v)

    @functools.cached_property
    def M(self) -> int:
        return 2 * self.m_k + 2 * self.m_v

    @functools.cached_property
    def V(self) -> slice:
        """Both value blocks, ``[W_{V,+1}; W_{V,-1}]``."""
        return slice(2 * self.m_k, self.M)

    @functools.cached_property
    def value_row(self) -> np.ndarray:
        """``(2 m_v,)``: ``u = proj[..., V] @ value_row = mean_r w_{V,+1,r} x - mean_r w_{V,-1,r} x``."""
        return _value_row(self.m_v)

    @classmethod
    def of(cls, config) -> "Layout":
        return cls(config.m_k, config.m_v)


@functools.lru_cache(maxsize=None)
def _value_row(m_v: int) -> np.ndarray:
    row = np.concatenate([np.full(m_v, 1.0 / m_v), np.full(m_v, -1.0 / m_v)])
    row.flags.writeable = False
    return row


def split(W: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Views ``W_Q, W_K, W_V+, W_V-`` of stacked weights ``(..., M, D)``."""
    return {"W_Q": W[..., layout.Q, :], "W_K": W[..., layout.K, :],
            "W_V+": W[..., layout.Vp, :], "W_V-": W[..., layout.Vm, :]}


# ---------------------------------------------------------------------------
# attention on projections: the model's math, over any leading axes (...)
# ---------------------------------------------------------------------------

class ModelOptions(NamedTuple):
    """The model's variants (docs/theory.md section 2): score scale ``tau`` and pooling
    over query positions (``sum``, or ``mean``: ``rho = 1/L``)."""

    score_scale: float = 1.0
    pooling: str = "sum"

    @classmethod
    def of(cls, config) -> "ModelOptions":
        return cls(float(config.score_scale), config.pooling)

    def rho(self, L: int) -> float:
        """The pooling factor ``rho``: 1 for ``sum``, ``1/L`` for ``mean``."""
        return 1.0 / L if self.pooling == "mean" else 1.0


PLAIN = ModelOptions()


class Attention(NamedTuple):
    """Forward cache of :func:`attend` (leading axes ``...``: runs, samples)."""

    q: np.ndarray      # (..., L, m_k)  q_l
    k: np.ndarray      # (..., L, m_k)  k_l
    u: np.ndarray      # (..., L)       u_k
    S: np.ndarray      # (..., L, L)    S_lk, query l on key k
    f: np.ndarray      # (...)          network output
    options: ModelOptions = PLAIN
    key_weight: np.ndarray | None = None   # (..., L) sum_l S_lk (None: from S)


def softmax(z: np.ndarray) -> np.ndarray:
    """``S_lk = exp(z_lk - max_k' z_lk') / sum_k'' exp(z_lk'' - max_k' z_lk')`` over the
    last axis (no overflow; an output below ``1e-308`` underflows to 0). Two keys use
    the logistic function of the score gap, ``S_lk = sigmoid(z_lk - z_lk')`` with
    ``k'`` the other key, which is the same function with one rounding instead of
    three (``z_l1 - z_l2 = -(z_l2 - z_l1)`` exactly)."""
    if z.shape[-1] == 2:
        return expit(z - z[..., ::-1])                       # (..., L, 2) sigmoid(z_lk - z_lk')
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sum_queries(S: np.ndarray) -> np.ndarray:
    """``sum_l S_lk`` (..., L); two queries as one add (the same value: a NumPy reduction
    over a length-2 axis costs several times the add)."""
    return np.add(S[..., 0, :], S[..., 1, :]) if S.shape[-2] == 2 else S.sum(-2)


def _pooled_output(key_weight: np.ndarray, u: np.ndarray, options: ModelOptions) -> np.ndarray:
    """``f = rho sum_k w_k u_k`` from the key weights ``w_k = sum_l S_lk`` (..., L); two
    keys as one add, as in :func:`_sum_queries`."""
    wu = key_weight * u                                      # (..., L) (sum_l S_lk) u_k
    f = np.add(wu[..., 0], wu[..., 1]) if wu.shape[-1] == 2 else wu.sum(-1)   # sum_k
    if options.pooling == "mean":
        f /= key_weight.shape[-1]
    return f


def attend(q: np.ndarray, k: np.ndarray, u: np.ndarray, options: ModelOptions = PLAIN) -> Attention:
    """Softmax attention and output ``f = rho sum_l sum_k S_lk u_k`` of patches with query
    and key projections ``q, k`` (..., L, m_k) and value projections ``u`` (..., L)."""
    z = np.matmul(q, k.swapaxes(-1, -2))                     # (..., L, L) <q_l, k_k>
    if options.score_scale != 1.0:
        z *= options.score_scale                             # z_lk = tau <q_l, k_k>
    S = softmax(z)
    key_weight = _sum_queries(S)                             # (..., L) sum_l S_lk
    return Attention(q, k, u, S, _pooled_output(key_weight, u, options), options, key_weight)


def _two_key_output(S2_sum: np.ndarray, u_1, du, options: ModelOptions = PLAIN) -> np.ndarray:
    """``f = rho sum_l (S_l1 u_1 + S_l2 u_2) = rho (2 u_1 + (S_12 + S_22) (u_2 - u_1))``
    from the two queries' key-2 weights ``S2_sum = S_12 + S_22`` (overwritten with
    ``f``), the value ``u_1`` and the difference ``du = u_2 - u_1`` (broadcastable):
    one exponential per query. The rounding error is ``~eps max(|u_1|, |u_2|)``, as in
    the two-product form; a softmax output below ``eps`` changes ``f`` by less than that
    in either form."""
    f = S2_sum
    f *= du
    f += 2 * u_1
    if options.pooling == "mean":
        f /= 2
    return f


class HeldOut(NamedTuple):
    """Held-out inputs of :func:`held_out_margins` in the signal frame (input times
    ``y_clean``): the noise patch's projections ``qn, kn`` and ``un``, either fixed,
    ``(R, n, m_k)`` and ``(R, n)`` (coordinates that keep their initial weights), or per
    state, ``(K, R, n, m_k)`` and ``(K, R, n)``; the label ``c = y y_clean`` (R, n)."""

    qn: np.ndarray
    kn: np.ndarray
    un: np.ndarray
    c: np.ndarray


def held_out_margins(Qs: np.ndarray, Ks: np.ndarray, Vs: np.ndarray, *groups: HeldOut,
                     options: ModelOptions = PLAIN) -> np.ndarray:
    """Margins ``y f`` of held-out inputs at ``K`` states, from the signal quantities and
    the inputs' noise projections: the groups' inputs one after another on the last axis,
    (K, R, n_1 + n_2 + ...).

    In the signal frame the signal patch is ``mu``, so its projections are the signal
    quantities ``Qs, Ks`` (K, R, m_k) and ``Vs`` (K, R); a group's noise patches are
    :class:`HeldOut`. The scores of :func:`attend` are bilinear in them, and so are the
    two score gaps::

        z_sn - z_ss = tau <Qs, kn_j - Ks>,    z_nn - z_ns = tau <qn_j, kn_j - Ks>

    from which :func:`_two_key_output` gives the output. The gaps of every group
    go into one array, so the softmax and the output run once over all of them.
    """
    K, R = Vs.shape
    n = sum(g.c.shape[-1] for g in groups)
    gap = np.empty((2, K, R, n))                              # [z_sn - z_ss, z_nn - z_ns]
    du = np.empty((K, R, n))                                  # u_n - u_s
    c = np.empty((R, n))
    start = 0
    for g in groups:
        cols = slice(start, start + g.c.shape[-1])
        start = cols.stop
        gap_s, gap_n = gap[0, ..., cols], gap[1, ..., cols]
        if g.qn.ndim == 3:                                    # fixed: products per state, batched over R
            np.matmul(Qs.swapaxes(0, 1), g.kn.swapaxes(-1, -2), out=gap_s.swapaxes(0, 1))
            gap_s -= np.einsum("krm,krm->kr", Qs, Ks)[..., None]          # <Qs, kn_j - Ks>
            np.matmul(Ks.swapaxes(0, 1), g.qn.swapaxes(-1, -2), out=gap_n.swapaxes(0, 1))
            np.subtract(np.einsum("rjm,rjm->rj", g.qn, g.kn), gap_n, out=gap_n)  # <qn_j, kn_j - Ks>
        else:
            dk = g.kn - Ks[:, :, None, :]                     # (K, R, n, m_k) kn_j - Ks
            np.einsum("krm,krjm->krj", Qs, dk, out=gap_s)
            np.einsum("krjm,krjm->krj", g.qn, dk, out=gap_n)
        np.subtract(g.un, Vs[..., None], out=du[..., cols])   # u_2 - u_1
        c[:, cols] = g.c
    if options.score_scale != 1.0:
        gap *= options.score_scale
    S2 = expit(gap, out=gap)                                  # S_l2 = sigmoid(z_l2 - z_l1)
    f = _two_key_output(np.add(S2[0], S2[1]), Vs[..., None], du, options)   # (K, R, n)
    f *= c
    return f


def _weighted_differences(S: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``sum_k' S_lk' (u_k - u_k')`` (..., L, L) from the softmax ``S`` (..., L, L) and the
    values ``u`` (..., L), the differences ``u_k - u_k'`` formed first. Two keys have one
    term, ``S_lk' (u_k - u_k')`` with ``k'`` the other key (the same value: the
    matmul's other term is an exact 0)."""
    if S.shape[-1] == 2:
        return S[..., ::-1] * (u - u[..., ::-1])[..., None, :]   # S_lk' (u_k - u_k')
    return np.matmul(S, u[..., None, :] - u[..., :, None])   # [k', k]: u_k - u_k'


def attend_backward(att: Attention, dL_df: np.ndarray, out=None):
    """``dL/dq, dL/dk`` (..., L, m_k) and ``dL/du`` (..., L) from ``dL/df`` (...).

    ``dL_dz_lk = g S_lk sum_k' S_lk' (u_k - u_k')`` (module doc), with the differences
    ``u_k - u_k'`` formed first. ``out``: optional arrays ``(dL/dq, dL/dk)`` to write into.
    """
    S, u, options = att.S, att.u, att.options
    if options.pooling == "mean":                            # rho g
        dL_df = dL_df / S.shape[-1]
    key_weight = S.sum(axis=-2) if att.key_weight is None else att.key_weight  # sum_l S_lk
    dL_du = dL_df[..., None] * key_weight                    # (..., L) rho g sum_l S_lk
    dL_dz = _weighted_differences(S, u)                      # (..., L, L) sum_k' S_lk' (u_k - u_k')
    dL_dz *= S
    dL_dz *= dL_df[..., None, None]                          # g
    if options.score_scale != 1.0:
        dL_dz *= options.score_scale                         # dL/d<q_l, k_k> = tau dL/dz_lk
    dq_out, dk_out = (None, None) if out is None else out
    dL_dq = np.matmul(dL_dz, att.k, out=dq_out)              # (..., L, m_k)
    dL_dk = np.matmul(dL_dz.swapaxes(-1, -2), att.q, out=dk_out)   # (..., L, m_k)
    return dL_dq, dL_dk, dL_du


# ---------------------------------------------------------------------------
# the stacked weights W (R, M, D) on inputs X (R, n, L, D)
# ---------------------------------------------------------------------------

class Forward(NamedTuple):
    """Outputs and cache of a forward pass (over runs ``R`` and samples ``n``)."""

    proj: np.ndarray   # (R, n, L, M)  W x_l for every weight row
    att: Attention     # on (R, n)

    @property
    def f(self) -> np.ndarray:
        """(R, n) network outputs."""
        return self.att.f


class SparseInputs(NamedTuple):
    """Inputs ``X`` (R, n, L, D) with few non-zeros (a patch touches ``s`` of the ``D``
    basis columns), kept for :func:`projections` and :func:`weight_gradient` as sparse
    products: SciPy's compiled sparse-times-dense loops do ``nnz M`` multiply-adds where
    the dense products do ``R n L D M``. Tested equal to the dense products
    (``tests/test_kernels.py``).

    Both products run without a copy when the weights are stored with ``M`` fastest
    (:meth:`weights`): ``W x`` reads the rows of ``W^T`` and ``dL/dW`` is written as
    ``(dL/dW)^T``, which is then ``W``'s own layout. They are written ``rows * WT``:
    the ``*`` of a SciPy sparse *matrix* is its matrix product, the same call as ``@``
    without ``@``'s check for a scalar operand (about 2 us of a 0.1 ms step, each)."""

    dense: np.ndarray          # (R, n, L, D) X
    rows: sp.csr_matrix        # (R n L, R D) block diagonal: run r's X on rows r n L.., columns r D..
    cols: sp.csr_matrix        # (R D, R n L) its transpose

    @classmethod
    def of(cls, X: np.ndarray) -> "SparseInputs":
        R, n, L, D = X.shape
        rows = sp.block_diag([sp.csr_matrix(X[r].reshape(n * L, D)) for r in range(R)], format="csr")
        return cls(X, rows, rows.T.tocsr())

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.dense.shape

    @staticmethod
    def weights(W: np.ndarray) -> np.ndarray:
        """A copy of ``W`` (R, M, D) stored with ``M`` fastest (the same values)."""
        return np.ascontiguousarray(W.transpose(0, 2, 1)).transpose(0, 2, 1)

    def projections(self, W: np.ndarray) -> np.ndarray:
        """:func:`projections` ``W x``: (R, n, L, M)."""
        R, n, L, D = self.shape
        WT = W.transpose(0, 2, 1).reshape(R * D, -1)      # (R D, M) W^T, a view when M is fastest
        return (self.rows * WT).reshape(R, n, L, -1)        # the matrix product (class doc)

    def weight_gradient(self, A: np.ndarray) -> np.ndarray:
        """:func:`weight_gradient` ``sum_{i,l} A_il x_il^T``: (R, M, D), stored with ``M`` fastest."""
        R, n, L, D = self.shape
        GT = self.cols * A.reshape(R * n * L, -1)          # (R D, M) (dL/dW)^T, the matrix product
        return GT.reshape(R, D, -1).transpose(0, 2, 1)


def projections(W: np.ndarray, X: np.ndarray | SparseInputs) -> np.ndarray:
    """``W x_l`` for every run, sample, patch and weight row: ``(R, n, L, M)``.

    ``W``: (R, M, D); ``X``: (R, n, L, D), dense or :class:`SparseInputs`.
    """
    if isinstance(X, SparseInputs):
        return X.projections(W)
    R, n, L, D = X.shape
    return np.matmul(X.reshape(R, n * L, D), W.transpose(0, 2, 1)).reshape(R, n, L, -1)


def forward_from_projections(proj: np.ndarray, layout: Layout,
                             options: ModelOptions = PLAIN) -> Forward:
    """Forward pass given the patch projections ``proj = W x`` ``(..., L, M)``."""
    u = proj[..., layout.V] @ layout.value_row      # u = mean_r (w_{V,+1,r} x) - mean_r (w_{V,-1,r} x)
    return Forward(proj, attend(proj[..., layout.Q], proj[..., layout.K], u, options))


def forward(W: np.ndarray, X: np.ndarray, layout: Layout, options: ModelOptions = PLAIN) -> Forward:
    """Forward pass of stacked weights ``W`` (R, M, D) on inputs ``X`` (R, n, L, D)."""
    return forward_from_projections(projections(W, X), layout, options)


def projection_gradient(fw: Forward, dL_df: np.ndarray, layout: Layout) -> np.ndarray:
    """``A = dL/dproj`` (R, n, L, M), so that ``dL/dW = sum_{i,l} A_il x_il^T``."""
    A = np.empty(fw.proj.shape)                              # (R, n, L, M)
    _, _, dL_du = attend_backward(fw.att, dL_df, out=(A[..., layout.Q], A[..., layout.K]))
    # dL/d(w_{V,+-1,r} x_k) = +-dL/du_k / m_v
    np.multiply(dL_du[..., None], layout.value_row, out=A[..., layout.V])
    return A


def weight_gradient(A: np.ndarray, X: np.ndarray | SparseInputs) -> np.ndarray:
    """``dL/dW = sum_{i,l} A_il x_il^T``: (R, M, D) from ``A`` (R, n, L, M) and
    ``X`` (R, n, L, D), dense or :class:`SparseInputs`."""
    if isinstance(X, SparseInputs):
        return X.weight_gradient(A)
    R, n, L, M = A.shape
    return np.matmul(A.reshape(R, n * L, M).transpose(0, 2, 1), X.reshape(R, n * L, -1))


# ---------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------

def logistic_loss(margin: np.ndarray) -> np.ndarray:
    """``log(1 + exp(-margin))`` without overflow, elementwise:
    ``log1p(exp(-|margin|)) + max(-margin, 0)``, the value of ``np.logaddexp(0, -margin)``
    to the last bit at about 3/4 of its cost."""
    loss = np.abs(margin)
    np.exp(np.negative(loss, out=loss), out=loss)            # exp(-|margin|)
    np.log1p(loss, out=loss)
    loss -= np.minimum(margin, 0.0)                          # + max(-margin, 0)
    return loss


def loss_derivative(margin: np.ndarray) -> np.ndarray:
    """``l' = -1 / (1 + exp(margin))``; exactly 0 once ``margin > ~745``."""
    return -expit(-margin)


def held_out_statistics(margin: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Test loss, test error (``y f <= 0``) and the mean and standard deviation of the
    test margins ``y f`` along ``axis`` (the test samples); the values of NumPy's
    ``mean`` and ``std``, with the mean computed once."""
    n = margin.shape[axis]
    mean = margin.sum(axis, keepdims=True) / n
    dev = margin - mean
    dev *= dev                                               # (y f - mean)^2
    return {"test_loss": logistic_loss(margin).sum(axis) / n,
            "test_error": np.count_nonzero(margin <= 0, axis=axis) / n,
            "test_margin_mean": np.squeeze(mean, axis),
            "test_margin_std": np.sqrt(dev.sum(axis) / n)}


def loss_derivative_of_batch(y: np.ndarray, margin: np.ndarray, batch: np.ndarray | None = None,
                             lprime: np.ndarray | None = None) -> np.ndarray:
    """``dL/df_i = y_i l'_i / n``, or ``y_i l'_i / B`` for the samples of a mini-batch
    ``batch`` (R, n) bool and 0 for the others."""
    lprime = loss_derivative(margin) if lprime is None else lprime
    if batch is None:
        return y * lprime / y.shape[-1]
    return np.where(batch, y * lprime, 0.0) / batch.sum(-1, keepdims=True)


class LossAndGradient(NamedTuple):
    forward: Forward
    margin: np.ndarray    # (R, n) y_i f_i
    lprime: np.ndarray    # (R, n) l'_i
    grad: np.ndarray      # (R, M, D) dL/dW

    @property
    def loss(self) -> np.ndarray:
        """(R,) the training loss ``L`` (computed on demand: the loop reads the margins)."""
        return logistic_loss(self.margin).mean(-1)


def loss_and_gradient(W: np.ndarray, X: np.ndarray, y: np.ndarray, layout: Layout,
                      options: ModelOptions = PLAIN, batch: np.ndarray | None = None) -> LossAndGradient:
    """Training loss and its gradient for stacked weights ``W`` (R, M, D), inputs
    ``X`` (R, n, L, D) and labels ``y`` (R, n). The full engine's step.

    ``batch`` (R, n) bool: the loss of a mini-batch, ``(1/B) sum_{i in batch}``; the
    returned ``loss`` is always the full training loss."""
    fw = forward(W, X, layout, options)
    margin = y * fw.f
    lprime = loss_derivative(margin)
    dL_df = loss_derivative_of_batch(y, margin, batch, lprime)
    grad = weight_gradient(projection_gradient(fw, dL_df, layout), X)
    return LossAndGradient(fw, margin, lprime, grad)
