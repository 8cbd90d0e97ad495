"""The two-layer transformer: forward pass and hand-derived gradients (section 2).

All weights are stacked into one array ``W`` of shape ``(R, M, D)`` with rows
``[W_Q (m_k); W_K (m_k); W_{V,+1} (m_v); W_{V,-1} (m_v)]`` (see :func:`split`).
Inputs are ``X`` of shape ``(R, n, L, D)`` with ``L = 2`` patches.

Forward (one sample, patches ``x_1, x_2``)::

    q_l = W_Q x_l,  k_l = W_K x_l                       # (m_k,)
    z_lk = <q_l, k_k>                                    # no scaling
    S_l2 = sigmoid(z_l2 - z_l1),  S_l1 = sigmoid(z_l1 - z_l2)   # softmax over 2 keys
    u_k = <vbar, x_k>,  vbar = mean_r w_{V,+1,r} - mean_r w_{V,-1,r}
    f = sum_l (S_l1 u_1 + S_l2 u_2)

Loss ``L = (1/n) sum_i log(1 + exp(-y_i f_i))`` and its derivative
``l'_i = -1 / (1 + exp(y_i f_i))``.

Backward (one line per chain-rule step)::

    dL_df      = y l' / n
    dL_du_k    = dL_df (S_1k + S_2k)
    dL_dz_l2   = dL_df S_l1 S_l2 (u_2 - u_1)   =: delta_l     (cancellation free)
    dL_dz_l1   = -delta_l
    dL_dq_l    = delta_l (k_2 - k_1)
    dL_dk_2    = sum_l delta_l q_l,   dL_dk_1 = -dL_dk_2
    dL_dWV+_r  = sum_k dL_du_k x_k / m_v,   dL_dWV-_r = -dL_dWV+_r
    dL_dW      = sum_{i,l} dL_dproj_il x_il^T                  # one batched matmul

The softmax is written with ``sigmoid`` of score gaps, so no ``exp`` overflows, and
``dL_dz`` uses the exact two-patch form ``S_l1 S_l2 (u_2 - u_1)``, never the generic
``S_lk (u_k - sum_k' S_lk' u_k')`` that loses ``S_l1`` below ``1e-16``
(``SETTING.md`` section 8).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from .config import SimulationConfig


class Layout(NamedTuple):
    """Row slices of the stacked weights."""

    m_k: int
    m_v: int

    @property
    def Q(self) -> slice:
        return slice(0, self.m_k)

    @property
    def K(self) -> slice:
        return slice(self.m_k, 2 * self.m_k)

    @property
    def Vp(self) -> slice:
        return slice(2 * self.m_k, 2 * self.m_k + self.m_v)

    @property
    def Vm(self) -> slice:
        return slice(2 * self.m_k + self.m_v, 2 * self.m_k + 2 * self.m_v)

    @property
    def M(self) -> int:
        return 2 * self.m_k + 2 * self.m_v

    @classmethod
    def of(cls, config: SimulationConfig) -> "Layout":
        return cls(config.m_k, config.m_v)


def split(W: np.ndarray, layout: Layout) -> dict[str, np.ndarray]:
    """Views ``W_Q, W_K, W_V+, W_V-`` of stacked weights ``(..., M, D)``."""
    return {"W_Q": W[..., layout.Q, :], "W_K": W[..., layout.K, :],
            "W_V+": W[..., layout.Vp, :], "W_V-": W[..., layout.Vm, :]}


class Forward(NamedTuple):
    """Outputs and cache of a forward pass (all over runs ``R`` and samples ``n``)."""

    f: np.ndarray      # (R, n)        network output f(X)
    proj: np.ndarray   # (R, n, L, M)  W x_l for every weight row
    u: np.ndarray      # (R, n, L)     u_k = <vbar, x_k>
    S1: np.ndarray     # (R, n, L)     S_l1 (query l on key 1)
    S2: np.ndarray     # (R, n, L)     S_l2 (query l on key 2)


def projections(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``W x_l`` for every run, sample, patch and weight row: ``(R, n, L, M)``.

    ``W``: (R, M, D); ``X``: (R, n, L, D).
    """
    R, n, L, D = X.shape
    return np.matmul(X.reshape(R, n * L, D), W.transpose(0, 2, 1)).reshape(R, n, L, -1)


def forward_from_projections(proj: np.ndarray, layout: Layout) -> Forward:
    """Forward pass given the patch projections ``proj = W x`` ``(R, n, L, M)``."""
    q = proj[..., layout.Q]                                      # (R, n, L, m_k)
    k = proj[..., layout.K]                                      # (R, n, L, m_k)
    # u = mean_r (w_{V,+1,r} x) - mean_r (w_{V,-1,r} x), as sum / m_v (what mean does)
    u = np.add.reduce(proj[..., layout.Vp], axis=-1)             # (R, n, L)
    u /= layout.m_v
    u_minus = np.add.reduce(proj[..., layout.Vm], axis=-1)
    u_minus /= layout.m_v
    u -= u_minus
    z = np.matmul(q, k.swapaxes(-1, -2))                         # (R, n, L, L) z_lk
    gap = np.subtract(z[..., 1], z[..., 0])                      # (R, n, L) z_l2 - z_l1
    S2 = expit(gap)
    S1 = expit(np.negative(gap, out=gap))
    f = S1 * u[..., 0:1]                                         # (R, n, L)
    f += S2 * u[..., 1:2]
    return Forward(f=np.add(f[..., 0], f[..., 1]), proj=proj, u=u, S1=S1, S2=S2)


def forward(W: np.ndarray, X: np.ndarray, layout: Layout) -> Forward:
    """Forward pass of stacked weights ``W`` (R, M, D) on inputs ``X`` (R, n, L, D)."""
    return forward_from_projections(projections(W, X), layout)


def logistic_loss(margin: np.ndarray) -> np.ndarray:
    """``log(1 + exp(-margin))`` without overflow, elementwise."""
    return np.logaddexp(0.0, -margin)


def held_out_statistics(margin: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Test loss, test error (``y f <= 0``) and the mean and standard deviation of the
    test margins ``y f`` along ``axis`` (the test samples)."""
    return {"test_loss": logistic_loss(margin).mean(axis),
            "test_error": (margin <= 0).mean(axis),
            "test_margin_mean": margin.mean(axis),
            "test_margin_std": margin.std(axis)}


def loss_derivative(margin: np.ndarray) -> np.ndarray:
    """``l' = -1 / (1 + exp(margin))``; exactly 0 once ``margin > ~745``."""
    return -expit(-margin)


def output_gradient_coefficients(fw: Forward, dL_df: np.ndarray, layout: Layout) -> np.ndarray:
    """``dL/dproj``: the loss gradient with respect to every projection ``W x_l``.

    Parameters
    ----------
    fw : Forward
        Forward pass cache.
    dL_df : (R, n)
        Derivative of the loss with respect to each output ``f_i``.

    Returns
    -------
    (R, n, L, M) array ``A`` with ``dL/dW = sum_{i,l} A_il x_il^T``.
    """
    proj, S1, S2, u = fw.proj, fw.S1, fw.S2, fw.u
    q = proj[..., layout.Q]                                      # (R, n, L, m_k)
    k = proj[..., layout.K]                                      # (R, n, L, m_k)
    g = dL_df[..., None]                                         # (R, n, 1)
    A = np.empty(proj.shape)                                     # (R, n, L, M)
    dL_du = np.empty(u.shape)                                    # (R, n, L)  dL/du_k
    np.add(S1[..., 0], S1[..., 1], out=dL_du[..., 0])            # sum_l S_l1
    np.add(S2[..., 0], S2[..., 1], out=dL_du[..., 1])            # sum_l S_l2
    dL_du *= g
    delta = g * S1                                               # (R, n, L)  dL/dz_l2
    delta *= S2
    delta *= u[..., 1:2] - u[..., 0:1]
    delta = delta[..., None]                                     # (R, n, L, 1)
    np.multiply(delta, k[..., 1:2, :] - k[..., 0:1, :], out=A[..., layout.Q])  # dL/dq_l
    dq = delta * q                                               # (R, n, L, m_k)
    np.add(dq[..., 0, :], dq[..., 1, :], out=A[..., 1, layout.K])  # dL/dk_2
    np.negative(A[..., 1, layout.K], out=A[..., 0, layout.K])    # dL/dk_1 = -dL/dk_2
    np.divide(dL_du[..., None], layout.m_v, out=A[..., layout.Vp])  # dL/d(w_{V,+1,r} x_k)
    np.negative(A[..., layout.Vp], out=A[..., layout.Vm])        # dL/d(w_{V,-1,r} x_k)
    return A


def weight_gradient(A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``dL/dW = sum_{i,l} A_il x_il^T``: (R, M, D) from ``A`` (R, n, L, M) and
    ``X`` (R, n, L, D)."""
    R, n, L, M = A.shape
    return np.matmul(A.reshape(R, n * L, M).transpose(0, 2, 1), X.reshape(R, n * L, -1))


class LossAndGradient(NamedTuple):
    forward: Forward
    margin: np.ndarray    # (R, n) y_i f_i
    loss: np.ndarray      # (R,)   training loss L
    lprime: np.ndarray    # (R, n) l'_i
    grad: np.ndarray      # (R, M, D) dL/dW


def loss_and_gradient(W: np.ndarray, X: np.ndarray, y: np.ndarray, layout: Layout) -> LossAndGradient:
    """Training loss and its gradient for stacked weights ``W`` (R, M, D), inputs
    ``X`` (R, n, L, D) and labels ``y`` (R, n)."""
    fw = forward(W, X, layout)
    margin = y * fw.f
    lprime = loss_derivative(margin)
    dL_df = y * lprime / y.shape[-1]
    grad = weight_gradient(output_gradient_coefficients(fw, dL_df, layout), X)
    return LossAndGradient(fw, margin, logistic_loss(margin).mean(-1), lprime, grad)
