"""Exact reduced dynamics: attention, loss and gradients from the theory's quantities
(``SETTING.md`` section 9).

With disjoint noise supports every score, output and gradient of the two-layer
transformer depends on the weights only through the quantities of section 4. This
module holds the math on that state, with no bookkeeping; :mod:`simulator.reduced`
owns the state and the loop.

State, in the *signal frame* (run axis ``R`` last)
--------------------------------------------------
The engine works with the noise quantities projected on ``y_clean_i xi_i`` rather
than ``y_i xi_i``. With ``c_i = y_i y_clean_i`` (``-1`` for a flipped label)::

    Qh_si = c_i Qn_si = <w_{Q,s}, y_clean_i xi_i>,   Kh_si = c_i Kn_si,   Vh_i = c_i Vn_i

so a flipped label only changes the sign of the loss weight ``alpha_i`` below, and
every array of size ``m_k n`` is free of ``c``. Arrays:

========= ================ ==============================================
``QKs``   (2, m_k, 1, R)   ``[Qs, Ks]``, ``Qs_s = <w_{Q,s}, mu>``
``QKn``   (2, m_k, n, R)   ``[Qh, Kh]``
``Vs``    (1, R)           ``<vbar, mu>``
``Vh``    (n, R)           ``<vbar, y_clean_i xi_i>``
``c``     (n, R)           ``y_i y_clean_i``
========= ================ ==============================================

Forward (sample ``i``; patch ``s`` = signal, ``n`` = noise; ``z_lk`` = query ``l``
on key ``k``)::

    z_ss = sum_s Qs_s Ks_s          z_sn = sum_s Qs_s Kh_si
    z_ns = sum_s Qh_si Ks_s         z_nn = sum_s Qh_si Kh_si
    gap_l = z_ln - z_ls              S_ln = sigmoid(gap_l),  S_ls = sigmoid(-gap_l)
    y_i f_i = c_i [ (S_ss + S_ns) Vs + (S_sn + S_nn) Vh_i ]

Backward. Write ``alpha_i = c_i l'_i / n`` and ``Dh_i = Vh_i - Vs``. The two-patch
softmax derivatives are cancellation free (section 8)::

    delta_si = alpha_i S_ss S_sn Dh_i            # dL/dz_sn = -dL/dz_ss (signal query)
    delta_ni = alpha_i S_ns S_nn Dh_i            # dL/dz_nn = -dL/dz_ns (noise query)
    hQ_si = delta_ni (Kh_si - Ks_s)              # dL/dW_Q[s, k] = y_i xi_ik hQ_si c_i
    hK_si = delta_si Qs_s + delta_ni Qh_si       # dL/dW_K[s, k] = y_i xi_ik hK_si c_i
    hV_i  = alpha_i (S_sn + S_nn) / m_v          # dL/dW_{V,+1}[r, k] = y_i xi_ik hV_i c_i
    gQ_s  = sum_i delta_si (Kh_si - Ks_s)        # dL/dW_Q[s, 0] = ||mu|| gQ_s
    gK_s  = -sum_i hK_si                         # dL/dW_K[s, 0] = ||mu|| gK_s
    gV    = sum_i alpha_i (S_ss + S_ns) / m_v    # dL/dW_{V,+1}[r, 0] = ||mu|| gV

(``W_{V,-1}`` gets the negated value gradients; every row of ``W_{V,+1}`` gets the
same.) So on sample ``i``'s support the gradient of a row is ``xi_ik`` times one
scalar per row, and on coordinate 0 it is ``||mu||`` times one scalar per row: each
quantity's update needs only that scalar and the magnitudes ``a_k`` of the
coordinates it lives on (``|xi_ik|``, or ``||mu||`` for the signal); see
:mod:`simulator.reduced_optimizers`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from .model import loss_derivative  # l' = -1 / (1 + exp(margin)), shared with the full engine


class Attention(NamedTuple):
    """Forward pass of the reduced state (run axis last)."""

    dK: np.ndarray        # (m_k, n, R)  Kh_si - Ks_s
    gap: np.ndarray       # (2, n, R)    [z_sn - z_ss, z_nn - z_ns]
    S_sig: np.ndarray     # (2, n, R)    [S_ss, S_ns]: weight of each query on the signal key
    S_noise: np.ndarray   # (2, n, R)    [S_sn, S_nn]: weight of each query on the noise key
    margin: np.ndarray    # (n, R)       y_i f_i


class Gradient(NamedTuple):
    """The gradient scalars of the module doc (run axis last)."""

    H: np.ndarray         # (2, m_k, n, R)  [hQ, hK]
    g: np.ndarray         # (2, m_k, 1, R)  [gQ, gK]
    hV: np.ndarray        # (n, R)
    gV: np.ndarray        # (1, R)
    H_sign: np.ndarray | None = None
    """(n, R) per-sample factor: when given, ``[hQ, hK]`` has the signs of
    ``H * H_sign`` (saves a pass over ``H``; :func:`gradient_signs` only)."""


def attention(QKs: np.ndarray, QKn: np.ndarray, Vs: np.ndarray, Vh: np.ndarray,
              c: np.ndarray) -> Attention:
    """Softmax outputs and training margins ``y_i f_i`` of the reduced state.

    The score gaps are computed as ``z_sn - z_ss = sum_s Qs_s (Kh_si - Ks_s)`` and
    ``z_nn - z_ns = sum_s Qh_si (Kh_si - Ks_s)``. The softmax over two keys is the
    logistic function of the gap, from one ``E = exp(-|gap|)`` (no overflow):
    ``sigmoid(gap) = 1 / (1 + E)`` if ``gap >= 0`` else ``E / (1 + E)``.
    """
    dK = QKn[1] - QKs[1]                              # (m_k, n, R) Kh - Ks
    gap = np.empty((2,) + dK.shape[1:])               # (2, n, R)
    np.einsum("sxr,sir->ir", QKs[0], dK, out=gap[0])  # z_sn - z_ss
    np.einsum("sir,sir->ir", QKn[0], dK, out=gap[1])  # z_nn - z_ns
    E = np.exp(-np.abs(gap))
    big = 1.0 / (1.0 + E)                             # sigmoid(|gap|)
    small = E * big                                   # sigmoid(-|gap|)
    up = gap >= 0.0
    S_noise = np.where(up, big, small)                # [S_sn, S_nn]
    S_sig = np.where(up, small, big)                  # [S_ss, S_ns]
    SV = S_sig * Vs
    SV += S_noise * Vh                                # (2, n, R) S_ls Vs + S_ln Vh
    margin = c * (SV[0] + SV[1])                      # (n, R)
    return Attention(dK, gap, S_sig, S_noise, margin)


def gradient(att: Attention, QKs: np.ndarray, QKn: np.ndarray, Vs: np.ndarray,
             Vh: np.ndarray, c: np.ndarray, m_v: int) -> Gradient:
    """The gradient scalars in float64, as the full engine computes them (a
    sample whose ``l'`` underflows to 0 gets a zero gradient).

    Used by GD, Adam, Signum and NormGD, whose steps depend on the size of the
    gradient; there a gradient below ``1e-300`` moves nothing either way.
    """
    n = c.shape[0]
    alpha = c * loss_derivative(att.margin) / n       # (n, R)   c_i l'_i / n
    delta = att.S_sig * att.S_noise
    delta *= alpha * (Vh - Vs)                        # (2, n, R) [delta_s, delta_n]
    H = np.empty((2,) + att.dK.shape)
    g = np.empty((2,) + QKs.shape[1:])
    np.add.reduce(delta[0] * att.dK, axis=1, keepdims=True, out=g[0])   # gQ
    np.multiply(delta[1], att.dK, out=H[0])           # hQ = delta_n (Kh - Ks)
    np.multiply(delta[0], QKs[0], out=H[1])
    H[1] += delta[1] * QKn[0]                         # hK = delta_s Qs + delta_n Qh
    np.add.reduce(H[1], axis=1, keepdims=True, out=g[1])
    np.negative(g[1], out=g[1])                       # gK = -sum_i hK
    hV = alpha * (att.S_noise[0] + att.S_noise[1]) / m_v                # (n, R)
    gV = np.add.reduce(alpha * (att.S_sig[0] + att.S_sig[1]), axis=0, keepdims=True) / m_v
    return Gradient(H, g, hV, gV)


#: Below this product of the smallest ``|l'_i|`` and the smallest ``S_ls S_ln``,
#: :func:`gradient_signs` switches to log-weights: above it, products of those
#: factors with state differences down to ``1e-100`` stay normal floats.
#: :func:`signgd_direction` applies it per sample, to ``|l'_i| S_ls S_ln``.
SAFE_WEIGHT = 1e-200


def gradient_signs(att: Attention, QKs: np.ndarray, QKn: np.ndarray, Vs: np.ndarray,
                   Vh: np.ndarray, c: np.ndarray, *, clean: bool = False) -> Gradient:
    """Arrays with the exact signs of the gradient scalars (sizes are not kept).

    The plain weights ``|l'_i| S_ls S_ln`` are used while they are far from
    underflow (smallest product above :data:`SAFE_WEIGHT`); otherwise
    :func:`gradient_signs_log` rescales every sum in log space. Both give the
    signs of the module-doc scalars::

        sign(hQ_si) = sD_i sign(Kh_si - Ks_s),               sD_i = sigma_i sign(Dh_i)
        sign(hK_si) = sD_i sign(S_ss S_sn Qs_s + S_ns S_nn Qh_si)
        sign(gQ_s)  = sign(sum_i sigma_i Dh_i |l'_i| S_ss S_sn (Kh_si - Ks_s))
        sign(gK_s)  = -sign(sum_i sigma_i Dh_i |l'_i| (S_ss S_sn Qs_s + S_ns S_nn Qh_si))

    with ``sigma_i = sign(alpha_i) = -c_i``. The factor ``sign(sD_i)`` is returned as
    ``H_sign`` rather than multiplied into ``H``.
    """
    P = att.S_sig * att.S_noise                       # (2, n, R) [S_ss S_sn, S_ns S_nn]
    abs_l = expit(-att.margin)                        # (n, R) |l'|
    if P.min() * abs_l.min() <= SAFE_WEIGHT:
        return gradient_signs_log(att, QKs, QKn, Vs, Vh, c, clean=clean)
    sigma = -c
    sDh = sigma * (Vh - Vs)                           # (n, R) sigma_i Dh_i
    a = abs_l * sDh
    W = np.empty((2,) + a.shape)                      # (2, n, R) weights of gQ, gK
    np.multiply(a, P[0], out=W[0])
    np.negative(a, out=W[1])
    H = np.empty((2,) + att.dK.shape)
    H[0] = att.dK                                     # Kh - Ks
    np.multiply(QKs[0], P[0], out=H[1])
    H[1] += QKn[0] * P[1]                             # S_ss S_sn Qs + S_ns S_nn Qh
    g = np.einsum("lsir,lir->lsr", H, W)[:, :, None, :]   # (2, m_k, 1, R)
    if clean:
        gV = np.full((1,) + a.shape[1:], -1.0)
    else:
        gV = np.add.reduce(sigma * abs_l * att.S_sig.sum(0), axis=0, keepdims=True)
    return Gradient(H, g, sigma, gV, np.sign(sDh))


def gradient_signs_log(att: Attention, QKs: np.ndarray, QKn: np.ndarray, Vs: np.ndarray,
                       Vh: np.ndarray, c: np.ndarray, *, clean: bool = False) -> Gradient:
    """Arrays with the exact signs of the gradient scalars, from log-weights.

    For SignGD only signs matter, and the plain products of :func:`gradient`
    underflow to 0 long before the true gradient is 0: ``l'_i`` at margins beyond
    745, ``S_ns S_nn`` beyond score gaps of about 745, and products of several such
    factors much earlier. Here each scalar is rescaled by a positive factor so that
    its largest term is of order one: with ``omega_i = log|l'_i|`` and
    ``lam_li = log(S_ls S_ln)`` (both from ``logaddexp``, never ``-inf``),
    ``sigma_i = sign(alpha_i) = -c_i`` (``l' < 0``) and ``sD_i = sigma_i sign(Dh_i)``::

        sign(hQ_si) = sD_i sign(Kh_si - Ks_s)
        sign(hK_si) = sD_i sign(Qs_s e^{lam_si - mu_i} + Qh_si e^{lam_ni - mu_i}),  mu_i = max_l lam_li
        sign(hV_i)  = sigma_i
        sign(gQ_s)  = sign(sum_i sigma_i Dh_i e^{omega_i + lam_si - kQ} (Kh_si - Ks_s))
        sign(gK_s)  = -sign(sum_i sigma_i Dh_i e^{omega_i + mu_i - kK} (Qs_s e^{..} + Qh_si e^{..}))
        sign(gV)    = sign(sum_i sigma_i e^{omega_i + log(S_ss + S_ns) - kV})

    where each ``k`` is the largest exponent of its sum, so the dominant term is
    computed without underflow and a term that does underflow is negligible next to
    it. ``clean=True`` (every ``c_i = 1``) uses ``sign(gV) = -1`` (law 1).

    Unlike the full engine, a sample keeps moving after its float64 ``l'`` reaches 0:
    the true ``l'`` is never 0.
    """
    gap, dK = att.gap, att.dK
    lam = np.logaddexp(0.0, gap)                      # -log [S_ss, S_ns]
    lam *= -2.0
    lam += gap                                        # log [S_ss S_sn, S_ns S_nn]
    mu = np.maximum(lam[0], lam[1])                   # (n, R)
    lam -= mu                                         # lam_l - mu <= 0
    neg_omega = np.logaddexp(0.0, att.margin)         # (n, R) -log |l'|
    sigma = -c
    sDh = sigma * (Vh - Vs)                           # (n, R) sigma_i Dh_i
    W = np.empty((2, 1) + mu.shape)                   # log-weights of gQ, gK
    np.subtract(lam[0], neg_omega, out=W[0, 0])
    W[0, 0] += mu                                     # omega + lam_s
    np.subtract(mu, neg_omega, out=W[1, 0])           # omega + mu
    W -= np.maximum.reduce(W, axis=2, keepdims=True)
    np.exp(W, out=W)
    W[0, 0] *= sDh
    W[1, 0] *= sDh
    np.negative(W[1], out=W[1])
    if clean:
        gV = np.full((1,) + mu.shape[1:], -1.0)
    else:
        log_S_sig = -np.logaddexp(0.0, gap)
        wV = np.logaddexp(log_S_sig[0], log_S_sig[1]) - neg_omega
        gV = np.add.reduce(sigma * np.exp(wV - wV.max(0)), axis=0, keepdims=True)   # (1, R)
    np.exp(lam, out=lam)                              # [e^{lam_s - mu}, e^{lam_n - mu}]

    H = np.empty((2,) + dK.shape)
    H[0] = dK                                         # Kh - Ks
    np.multiply(QKs[0], lam[0], out=H[1])
    H[1] += QKn[0] * lam[1]                           # Qs e^{..} + Qh e^{..}
    if lam.min() == 0.0:
        # a weight underflowed: where the weighted sum is exactly 0 the sign is that
        # of the other term (exact when the dominant term is 0)
        zero = H[1] == 0
        if zero.any():
            H[1][zero] = (np.sign(QKs[0]) + np.sign(QKn[0]))[zero]
    g = np.add.reduce(H * W, axis=2, keepdims=True)   # (2, m_k, 1, R)
    H *= np.sign(sDh)
    return Gradient(H, g, sigma, gV)


# ---------------------------------------------------------------------------
# SignGD on one flat state array (the fast path of simulator.reduced)
# ---------------------------------------------------------------------------

def state_size(m_k: int, n: int) -> int:
    """Rows ``S`` of the flat state: ``[Qh, Kh, Qs, Ks, Vh, Vs]``, ``2 m_k n + 2 m_k + n + 1``."""
    return 2 * m_k * n + 2 * m_k + n + 1


#: Below this many columns (runs, last axis) :func:`_dot` uses ``np.vecdot``, else
#: ``np.einsum``: the faster of the two at each size (they differ only in the
#: order of summation).
VECDOT_MAX_RUNS = 64


def _dot(subscripts: str, a: np.ndarray, b: np.ndarray, axis: int,
         out: np.ndarray) -> np.ndarray:
    """``out <- sum over one axis of a * b``: ``subscripts`` in ``np.einsum`` form,
    ``axis`` the summed axis of ``a`` (``b`` broadcasts against ``a``)."""
    if a.shape[-1] < VECDOT_MAX_RUNS:
        return np.vecdot(a, b, axis=axis, out=out)
    return np.einsum(subscripts, a, b, out=out)


class FlatState(NamedTuple):
    """A flat state (or step) ``X (S, R)``, rows ``[Qh, Kh, Qs, Ks, Vh, Vs]``, with
    views of its parts (built once per buffer by :func:`flat_state`)."""

    X: np.ndarray          # (S, R)
    QKn: np.ndarray        # (2, m_k, n, R)  [Qh, Kh]
    QKs: np.ndarray        # (2, m_k, 1, R)  [Qs, Ks]
    Vh: np.ndarray         # (n, R)
    Vs: np.ndarray         # (1, R)


def flat_state(X: np.ndarray, m_k: int, n: int) -> FlatState:
    """The views of a flat state ``X (S, R)`` (no copy)."""
    R = X.shape[-1]
    a, b = 2 * m_k * n, 2 * m_k * n + 2 * m_k
    return FlatState(X, X[:a].reshape(2, m_k, n, R), X[a:b].reshape(2, m_k, 1, R),
                     X[b:b + n], X[b + n:])


def signgd_direction(x: FlatState, c: np.ndarray, eta_l1: np.ndarray, eta_mu: float, *,
                     clean: bool, out: FlatState, values: bool = True):
    """One SignGD step of a flat state: ``out <- eta * Phi`` (so ``X <- X - out``), with
    the exact signs of :func:`gradient_signs`, in few NumPy calls.

    The same equations as :func:`attention`, :func:`gradient_signs` and
    :class:`~simulator.reduced_optimizers.SignGD` (module doc), arranged for speed:
    the softmax is ``S = sigmoid([gap, -gap])``, and the law-4 sign is taken from
    ``T_si = Qh_si + Qs_s r_i`` with ``r_i = (S_ss S_sn) / (S_ns S_nn) > 0``, which has
    the sign of ``S_ss S_sn Qs_s + S_ns S_nn Qh_si``; then
    ``-gK_s = sum_i sigma_i Dh_i |l'_i| S_ns S_nn T_si``. Where a sample's weight
    ``|l'_i| S_ls S_ln`` gets near underflow (below :data:`SAFE_WEIGHT`; each term
    of each sum is then still a normal float) it falls back to
    :func:`gradient_signs_log`.

    Parameters
    ----------
    x : FlatState, (S, R) with ``S = 2 m_k n + 2 m_k + n + 1``.
    c : (n, R) ``y_i y_clean_i``.
    eta_l1 : (n, R) ``eta ||xi_i||_1``.
    eta_mu : ``eta ||mu||``.
    clean : every ``c_i = 1`` (then ``sign(gV) = -1``, law 1).
    out : FlatState, (S, R): the step, filled in.
    values : fill the value rows ``Vh, Vs`` of ``out``. With clean labels they are
        the same at every step (``-2 eta ||xi_i||_1`` and ``-2 eta ||mu||``, laws 1-2),
        so a loop may fill them once and pass ``False`` (only with ``clean``).

    Returns
    -------
    margin : (n, R) ``y_i f_i``.
    S : (2, 2, n, R) ``S[0] = [S_sn, S_nn]`` (weights on the noise key),
        ``S[1] = [S_ss, S_ns]`` (weights on the signal key).
    """
    (Qh, Kh), (Qs, Ks), Vh, Vs = x.QKn, x.QKs, x.Vh, x.Vs
    DQKn, DQKs, DVh, DVs = out.QKn, out.QKs, out.Vh, out.Vs
    H = np.empty(x.QKn.shape)                         # (2, m_k, n, R) [Kh - Ks, T]
    dK, T = H[0], H[1]
    np.subtract(Kh, Ks, out=dK)
    G = np.empty((2,) + x.QKn.shape[0:1] + Vh.shape)  # (2, 2, n, R) [gap, -gap]
    _dot("sir,sxr->ir", dK, Qs, 0, out=G[0, 0])       # z_sn - z_ss
    _dot("sir,sir->ir", dK, Qh, 0, out=G[0, 1])       # z_nn - z_ns
    np.negative(G[0], out=G[1])
    S = expit(G, out=G)                               # [[S_sn, S_nn], [S_ss, S_ns]]
    Ssum = np.add(S[:, 0], S[:, 1])                   # (2, n, R) [S_sn + S_nn, S_ss + S_ns]
    margin = Ssum[1] * Vs
    margin += Ssum[0] * Vh                            # (n, R) c_i y_i f_i
    if not clean:
        margin *= c
    abs_l = expit(-margin)                            # (n, R) |l'|
    P = S[0] * S[1]                                   # (2, n, R) [S_ss S_sn, S_ns S_nn]
    P *= abs_l                                        # |l'_i| S_ls S_ln
    if not np.minimum.reduce(P, axis=None) > SAFE_WEIGHT:     # (also NaN: the caller raises)
        return _signgd_log_direction(x, c, eta_l1, eta_mu, clean=clean, out=out)
    np.divide(P[0], P[1], out=Ssum[0])                # r_i (Ssum[0] is free now)
    sDh = np.subtract(Vs, Vh) if clean else -c * (Vh - Vs)   # (n, R) sigma_i Dh_i
    np.multiply(Qs, Ssum[0], out=T)
    T += Qh                                           # (m_k, n, R) sign of law 4
    np.sign(H, out=DQKn)
    f = np.sign(sDh)
    f *= eta_l1                                       # (n, R) eta ||xi_i||_1 sD_i
    DQKn *= f                                         # laws 3 and 4
    P *= sDh                                          # (2, n, R) weights of gQ, -gK
    _dot("lsir,lxir->lsr", H, P[:, None], 2, out=DQKs[:, :, 0])  # [gQ, -gK] (laws 5, 6)
    np.sign(DQKs, out=DQKs)
    DQKs[0] *= eta_mu
    DQKs[1] *= -eta_mu
    if clean:
        if values:
            np.multiply(-2.0, eta_l1, out=DVh)        # law 2
            DVs.fill(-2.0 * eta_mu)                   # law 1
    else:
        np.multiply(-2.0 * eta_l1, c, out=DVh)        # sign(hV_i) = sigma_i
        np.sign(np.add.reduce(-c * abs_l * Ssum[1], axis=0), out=DVs[0])
        DVs *= 2.0 * eta_mu
    return margin, S


def _signgd_log_direction(x, c, eta_l1, eta_mu, *, clean, out):
    """:func:`signgd_direction` from :func:`attention` and :func:`gradient_signs_log`
    (near underflow; rare, so written for clarity)."""
    QKn, QKs, Vh, Vs = x[1:]
    DQKn, DQKs, DVh, DVs = out[1:]
    att = attention(QKs, QKn, Vs, Vh, c)
    grad = gradient_signs_log(att, QKs, QKn, Vs, Vh, c, clean=clean)
    np.sign(grad.H, out=DQKn)
    DQKn *= eta_l1
    np.multiply(eta_mu, np.sign(grad.g), out=DQKs)
    np.multiply(2.0 * eta_l1, np.sign(grad.hV), out=DVh)
    np.multiply(2.0 * eta_mu, np.sign(grad.gV), out=DVs)
    return att.margin, np.stack([att.S_noise, att.S_sig])
