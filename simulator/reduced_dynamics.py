"""Exact reduced dynamics: the model and the optimizers on the theory's quantities
(``docs/theory.md`` section 9).

With disjoint noise supports every score, output and gradient of the two-layer
transformer depends on the weights only through the quantities of section 4. This
module writes those quantities as the model's patch projections, so the reduced
engine evaluates and differentiates the one model of :mod:`simulator.model`, and
lifts the optimizers of :mod:`simulator.optimizers` onto them exactly;
:mod:`simulator.reduced` owns the batch and the engine.

State, in the *signal frame* (run axis ``R`` last)
--------------------------------------------------
The engine evaluates the model on the inputs ``y_clean_i X_i``, whose signal patch is
``mu`` for every sample, with labels ``c_i = y_i y_clean_i`` (``-1`` for a flipped
label): ``y_i f(X_i) = c_i f(y_clean_i X_i)``, since ``f`` is odd in its input's values
with the scores unchanged. The noise quantities are then projected on ``y_clean_i xi_i``::

    Qh_si = c_i Qn_si = <w_{Q,s}, y_clean_i xi_i>,   Kh_si = c_i Kn_si,   Vh_i = c_i Vn_i

and sample ``i``'s patch projections are ``q = [Qs, Qh_i]``, ``k = [Ks, Kh_i]``,
``u = [Vs, Vh_i]`` (signal patch first: the model has no positional encoding, so the
patch order of the data does not matter). With ``L > 2`` patches each of the
``P = L - 1`` noise patches ``xi_ij`` of a sample has its own quantities, and the
noise rows ``N_x = P n`` are patch-major (row ``j n + i``, as :mod:`simulator.data`):
``q = [Qs, Qh_i1, .., Qh_iP]`` and so on. One flat array ``X (N, R)``, ``N =``
:func:`state_size`, holds the state, with views (:class:`FlatState`):

========= ================ ==============================================
``QKn``   (2, m_k, N_x, R) ``[Qh, Kh]``
``QKs``   (2, m_k, 1, R)   ``[Qs, Ks]``, ``Qs_s = <w_{Q,s}, mu>``
``Vh``    (N_x, R)         ``<vbar, y_clean_i xi_ij>``
``Vs``    (1, R)           ``<vbar, mu>``
========= ================ ==============================================

Gradients and the lift of an optimizer
--------------------------------------
On sample ``i``'s support the gradient of a weight row is ``y_clean_i xi_ik`` times one
scalar, the model's ``dL/dq``, ``dL/dk`` or ``dL/du / m_v`` of the noise patch
(:func:`gradient`); on coordinate 0 it is ``||mu||`` times the sum over samples of
the signal patch's. Write the gradient of a weight coordinate as ``sigma_k a_k h``
with magnitude ``a_k`` (``|xi_ik|``, or ``||mu||``), sign ``sigma_k`` and the quantity's
scalar ``h``. An elementwise optimizer ``P`` that is odd and starts from zero moves the
coordinate by ``-eta sigma_k P(a_k h)``, so the quantity, ``sum_k sigma_k a_k w_k``, moves by::

    -eta * mult * sum_k a_k P(a_k h)

with ``mult = 2`` for the value quantities (``W_{V,+1}`` and ``W_{V,-1}`` move in
opposite directions; every row of either sees the same gradient) and 1 otherwise
(:func:`lift`). SignGD gives ``eta ||xi_i||_1 sign(h)``, the six laws; GD
``eta ||xi_i||_2^2 h``; Adam its per-coordinate moments ``a_k M``, ``a_k^2 V``. NormGD's
global norm is ``||G||^2 = sum over quantities of rows * sum_k (a_k h)^2`` with
``rows = 2 m_v`` for the values.

SignGD also has a fused kernel, :func:`signgd_direction`: the same step in a few
NumPy calls, with the exact signs of the gradient where the float64 products
underflow (:func:`gradient_signs_log`). It equals the lifted SignGD wherever no
product underflows (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit

from .model import PLAIN, Attention, ModelOptions, attend, attend_backward, loss_derivative_of_batch


def state_size(m_k: int, n: int) -> int:
    """Rows ``N`` of the flat state of ``n`` noise rows (``N_x``, module doc):
    ``[Qh, Kh, Qs, Ks, Vh, Vs]``, ``2 m_k n + 2 m_k + n + 1``."""
    return 2 * m_k * n + 2 * m_k + n + 1


class FlatState(NamedTuple):
    """A flat state (or step) ``X (N, R)``, rows ``[Qh, Kh, Qs, Ks, Vh, Vs]``, with
    views of its parts (built once per buffer by :func:`flat_state`)."""

    X: np.ndarray          # (N, R)
    QKn: np.ndarray        # (2, m_k, N_x, R)  [Qh, Kh]
    QKs: np.ndarray        # (2, m_k, 1, R)    [Qs, Ks]
    Vh: np.ndarray         # (N_x, R)
    Vs: np.ndarray         # (1, R)


def flat_state(X: np.ndarray, m_k: int, n: int) -> FlatState:
    """The views of a flat state ``X (N, R)`` of ``n`` noise rows (no copy)."""
    R = X.shape[-1]
    a, b = 2 * m_k * n, 2 * m_k * n + 2 * m_k
    return FlatState(X, X[:a].reshape(2, m_k, n, R), X[a:b].reshape(2, m_k, 1, R),
                     X[b:b + n], X[b + n:])


# ---------------------------------------------------------------------------
# the model on the state
# ---------------------------------------------------------------------------

def _per_sample(a: np.ndarray, n: int) -> np.ndarray:
    """Noise rows ``(..., P n, R)`` (patch-major) as ``(R, n, P, ...)``."""
    lead = a.shape[:-2]
    a = a.reshape(lead + (-1, n, a.shape[-1]))                 # (..., P, n, R)
    return np.moveaxis(a, (-1, -2, -3), (0, 1, 2))            # (R, n, P, ...)


def _noise_rows(a: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_per_sample`: ``(R, n, P, ...)`` as ``(..., P n, R)``."""
    R, n, P = a.shape[:3]
    return np.moveaxis(a, (0, 1, 2), (-1, -2, -3)).reshape(a.shape[3:] + (P * n, R))


def patch_projections(x: FlatState, n: int, alpha: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's ``q, k`` (R, n, L, m_k) and ``u`` (R, n, L) of the state of ``n``
    samples (patch 0 = signal, then the noise patches; signal frame, module doc).
    With feature noise ``alpha`` a noise patch is
    ``y_clean (xi - alpha y_clean mu) = y_clean xi - alpha mu``, so its projections are
    ``Qh - alpha Qs``, ``Kh - alpha Ks``, ``Vh - alpha Vs``."""
    (Qh, Kh), (Qs, Ks) = x.QKn, x.QKs                         # (m_k, P n, R), (m_k, 1, R)
    m_k, R = Qh.shape[0], Qh.shape[-1]
    L = Qh.shape[1] // n + 1
    q = np.empty((R, n, L, m_k))
    k = np.empty((R, n, L, m_k))
    q[:, :, 0] = Qs.T                                         # (R, 1, m_k) broadcast over n
    q[:, :, 1:] = _per_sample(Qh, n)
    k[:, :, 0] = Ks.T
    k[:, :, 1:] = _per_sample(Kh, n)
    u = np.empty((R, n, L))
    u[:, :, 0] = x.Vs.T
    u[:, :, 1:] = _per_sample(x.Vh, n)
    if alpha:
        q[:, :, 1:] -= alpha * q[:, :, :1]
        k[:, :, 1:] -= alpha * k[:, :, :1]
        u[:, :, 1:] -= alpha * u[:, :, :1]
    return q, k, u


def evaluate(x: FlatState, c: np.ndarray, options: ModelOptions = PLAIN,
             alpha: float = 0.0) -> tuple[Attention, np.ndarray]:
    """The model at state ``x``: its attention cache and the margins ``y_i f_i`` (R, n)
    (``c`` (n, R), one per sample)."""
    att = attend(*patch_projections(x, c.shape[0], alpha), options)
    return att, c.T * att.f


def gradient(att: Attention, margin: np.ndarray, c: np.ndarray, m_v: int,
             batch: np.ndarray | None = None, alpha: float = 0.0) -> FlatState:
    """The gradient scalars ``h`` of every quantity, laid out as the state (module doc).

    ``dL/df = c_i l'_i / n`` in the signal frame (``/ B`` on a mini-batch's samples, 0
    off it); then the model's backward pass gives ``dL/dq, dL/dk, dL/du`` of each
    patch. Noise patch ``j``: ``[hQ, hK] = [dL/dq, dL/dk]``, ``hV = dL/du / m_v``;
    signal coordinate, summed over samples: ``[gQ, gK]``, ``gV`` from the signal
    patch, and with feature noise ``-alpha`` times the noise patches' (their entry on
    coordinate 0).
    """
    n, R = c.shape
    dL_df = loss_derivative_of_batch(c.T, margin, batch)      # (R, n) c_i l'_i / n (or / B)
    dL_dq, dL_dk, dL_du = attend_backward(att, dL_df)         # (R, n, L, m_k), (R, n, L)
    m_k, L = dL_dq.shape[-1], dL_dq.shape[2]
    g = flat_state(np.empty((state_size(m_k, n * (L - 1)), R)), m_k, n * (L - 1))
    g.QKn[0] = _noise_rows(dL_dq[:, :, 1:])                   # hQ (m_k, P n, R)
    g.QKn[1] = _noise_rows(dL_dk[:, :, 1:])                   # hK
    signal = (lambda d: d[:, :, 0] - alpha * d[:, :, 1:].sum(2)) if alpha else (lambda d: d[:, :, 0])  # noqa: E731
    g.QKs[0, :, 0] = signal(dL_dq).sum(1).T                   # gQ (m_k, R)
    g.QKs[1, :, 0] = signal(dL_dk).sum(1).T                   # gK
    g.Vh[...] = _noise_rows(dL_du[:, :, 1:]) / m_v            # hV (P n, R)
    g.Vs[...] = signal(dL_du).sum(1)[None] / m_v              # gV (1, R)
    return g


class Magnitudes(NamedTuple):
    """The coordinate magnitudes ``a_k`` the quantities live on (run axis last)."""

    mu: float              # ||mu||
    abs_xi: np.ndarray     # (s, N_x, R)  |xi_ik| of each noise row

    @property
    def l1(self) -> np.ndarray:
        """(N_x, R) ``||xi_ij||_1``."""
        return self.abs_xi.sum(0)


def coordinate_gradients(h: FlatState, mag: Magnitudes) -> dict[str, np.ndarray]:
    """The gradients ``a_k h`` of the weight coordinates under each quantity (module
    doc): a leading axis of the coordinates, ``s`` for noise quantities, 1 for signal."""
    a_noise = mag.abs_xi                                       # (s, n, R)
    return {"QKn": a_noise[:, None, None] * h.QKn,            # (s, 2, m_k, n, R)
            "QKs": mag.mu * h.QKs[None],                       # (1, 2, m_k, 1, R)
            "Vh": a_noise * h.Vh,                              # (s, n, R)
            "Vs": mag.mu * h.Vs[None]}                         # (1, 1, R)


#: ``mult`` of each quantity (module doc).
MULT = {"QKn": 1.0, "QKs": 1.0, "Vh": 2.0, "Vs": 2.0}


def lift(optimizer, h: FlatState, mag: Magnitudes, m_v: int, state, t: int, eta: float,
         out: FlatState):
    """One step of ``optimizer`` on the quantities: ``out <- eta mult sum_k a_k P(a_k h)``
    (so ``X <- X - out``). Returns the optimizer's new state (one per quantity)."""
    G = coordinate_gradients(h, mag)
    if state is None:
        state = {name: optimizer.init(g) for name, g in G.items()}
    norm = None
    if optimizer.needs_norm:                                   # ||G||_2 per run, (R,)
        rows = {"QKn": 1, "QKs": 1, "Vh": 2 * m_v, "Vs": 2 * m_v}
        norm = np.sqrt(sum(rows[name] * np.square(g).reshape(-1, g.shape[-1]).sum(0)
                           for name, g in G.items()))
    a = {"QKn": mag.abs_xi[:, None, None], "QKs": mag.mu, "Vh": mag.abs_xi, "Vs": mag.mu}
    new_state = {}
    for name, g in G.items():
        P, new_state[name] = optimizer.direction(g, state[name], t, norm)
        getattr(out, name)[...] = eta * MULT[name] * (a[name] * P).sum(0)
    return new_state


# ---------------------------------------------------------------------------
# SignGD with exact signs: the fused kernel
# ---------------------------------------------------------------------------

#: Below this product of ``|l'_i|`` and ``S_ls S_ln`` (per sample), the kernel switches
#: to log-weights: above it, products of those factors with state differences down to
#: ``1e-100`` stay normal floats.
SAFE_WEIGHT = 1e-200


class Signs(NamedTuple):
    """Arrays with the exact signs of the gradient scalars (sizes are not kept)."""

    H: np.ndarray         # (2, m_k, n, R)  [hQ, hK]
    g: np.ndarray         # (2, m_k, 1, R)  [gQ, gK]
    hV: np.ndarray        # (n, R)
    gV: np.ndarray        # (1, R)


class ScoreGaps(NamedTuple):
    """Score gaps of the state and the softmax and margins they give (kernel only)."""

    dK: np.ndarray        # (m_k, n, R)  Kh_si - Ks_s
    gap: np.ndarray       # (2, n, R)    [z_sn - z_ss, z_nn - z_ns]
    margin: np.ndarray    # (n, R)       y_i f_i


def gradient_signs_log(gaps: ScoreGaps, QKs: np.ndarray, QKn: np.ndarray, Vs: np.ndarray,
                       Vh: np.ndarray, c: np.ndarray, *, clean: bool = False) -> Signs:
    """Arrays with the exact signs of the gradient scalars, from log-weights.

    For SignGD only signs matter, and the plain float64 products of the gradient
    underflow to 0 long before the true gradient is 0: ``l'_i`` at margins beyond
    745, ``S_ns S_nn`` beyond score gaps of about 745, and products of several such
    factors much earlier. Here each scalar is rescaled by a positive factor so that
    its largest term is of order one: with ``omega_i = log|l'_i|`` and
    ``lam_li = log(S_ls S_ln)`` (both from ``logaddexp``, never ``-inf``),
    ``sigma_i = sign(alpha_i) = -c_i`` (``l' < 0``) and ``sD_i = sigma_i sign(Dh_i)``::

        sign(hQ_si) = sD_i sign(Kh_si - Ks_s)
        sign(hK_si) = sD_i sign(Qs_s e^{lam_si - lmax_i} + Qh_si e^{lam_ni - lmax_i}),  lmax_i = max_l lam_li
        sign(hV_i)  = sigma_i
        sign(gQ_s)  = sign(sum_i sigma_i Dh_i e^{omega_i + lam_si - kQ} (Kh_si - Ks_s))
        sign(gK_s)  = -sign(sum_i sigma_i Dh_i e^{omega_i + lmax_i - kK} (Qs_s e^{..} + Qh_si e^{..}))
        sign(gV)    = sign(sum_i sigma_i e^{omega_i + log(S_ss + S_ns) - kV})

    where each ``k`` is the largest exponent of its sum, so the dominant term is
    computed without underflow and a term that does underflow is negligible next to
    it. ``clean=True`` (every ``c_i = 1``) uses ``sign(gV) = -1`` (law 1).

    Unlike the full engine, a sample keeps moving after its float64 ``l'`` reaches 0:
    the true ``l'`` is never 0.
    """
    gap, dK = gaps.gap, gaps.dK
    lam = np.logaddexp(0.0, gap)                      # -log [S_ss, S_ns]
    lam *= -2.0
    lam += gap                                        # log [S_ss S_sn, S_ns S_nn]
    lmax = np.maximum(lam[0], lam[1])                 # (n, R)
    lam -= lmax                                       # lam_l - lmax <= 0
    neg_omega = np.logaddexp(0.0, gaps.margin)         # (n, R) -log |l'|
    sigma = -c
    sDh = sigma * (Vh - Vs)                           # (n, R) sigma_i Dh_i
    logw = np.empty((2, 1) + lmax.shape)              # log-weights of gQ, gK
    np.subtract(lam[0], neg_omega, out=logw[0, 0])
    logw[0, 0] += lmax                                # omega + lam_s
    np.subtract(lmax, neg_omega, out=logw[1, 0])      # omega + lmax
    logw -= np.maximum.reduce(logw, axis=2, keepdims=True)
    w = np.exp(logw, out=logw)                        # weights, largest 1
    w[0, 0] *= sDh
    w[1, 0] *= sDh
    np.negative(w[1], out=w[1])
    if clean:
        gV = np.full((1,) + lmax.shape[1:], -1.0)
    else:
        log_S_sig = -np.logaddexp(0.0, gap)
        wV = np.logaddexp(log_S_sig[0], log_S_sig[1]) - neg_omega
        gV = np.add.reduce(sigma * np.exp(wV - wV.max(0)), axis=0, keepdims=True)   # (1, R)
    np.exp(lam, out=lam)                              # [e^{lam_s - lmax}, e^{lam_n - lmax}]

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
    g = np.add.reduce(H * w, axis=2, keepdims=True)   # (2, m_k, 1, R)
    H *= np.sign(sDh)
    return Signs(H, g, sigma, gV)



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


def signgd_direction(x: FlatState, c: np.ndarray, eta_l1: np.ndarray, eta_mu: float, *,
                     clean: bool, out: FlatState, values: bool = True):
    """One SignGD step of a flat state: ``out <- eta * Phi`` (so ``X <- X - out``), with
    the exact signs of the gradient, in few NumPy calls.

    The same equations as :func:`evaluate`, :func:`gradient` and :func:`lift` of
    :class:`~simulator.optimizers.SignGD` (module doc), arranged for speed:
    the softmax is ``S = sigmoid([gap, -gap])``, and the law-4 sign is taken from
    ``T_si = Qh_si + Qs_s r_i`` with ``r_i = (S_ss S_sn) / (S_ns S_nn) > 0``, which has
    the sign of ``S_ss S_sn Qs_s + S_ns S_nn Qh_si``; then
    ``-gK_s = sum_i sigma_i Dh_i |l'_i| S_ns S_nn T_si``. Where a sample's weight
    ``|l'_i| S_ls S_ln`` gets near underflow (below :data:`SAFE_WEIGHT`; each term
    of each sum is then still a normal float) it falls back to
    :func:`gradient_signs_log`.

    Parameters
    ----------
    x : FlatState, (N, R) with ``N = 2 m_k n + 2 m_k + n + 1``.
    c : (n, R) ``y_i y_clean_i``.
    eta_l1 : (n, R) ``eta ||xi_i||_1``.
    eta_mu : ``eta ||mu||``.
    clean : every ``c_i = 1`` (then ``sign(gV) = -1``, law 1).
    out : FlatState, (N, R): the step, filled in.
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
    stepQKn, stepQKs, stepVh, stepVs = out.QKn, out.QKs, out.Vh, out.Vs
    H = np.empty(x.QKn.shape)                         # (2, m_k, n, R) [Kh - Ks, T]
    dK, T = H[0], H[1]
    np.subtract(Kh, Ks, out=dK)
    gaps = np.empty((2,) + x.QKn.shape[0:1] + Vh.shape)   # (2, 2, n, R) [gap, -gap]
    _dot("sir,sxr->ir", dK, Qs, 0, out=gaps[0, 0])    # z_sn - z_ss
    _dot("sir,sir->ir", dK, Qh, 0, out=gaps[0, 1])    # z_nn - z_ns
    np.negative(gaps[0], out=gaps[1])
    S = expit(gaps, out=gaps)                               # [[S_sn, S_nn], [S_ss, S_ns]]
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
    np.sign(H, out=stepQKn)
    f = np.sign(sDh)
    f *= eta_l1                                       # (n, R) eta ||xi_i||_1 sD_i
    stepQKn *= f                                         # laws 3 and 4
    P *= sDh                                          # (2, n, R) weights of gQ, -gK
    _dot("lsir,lxir->lsr", H, P[:, None], 2, out=stepQKs[:, :, 0])  # [gQ, -gK] (laws 5, 6)
    np.sign(stepQKs, out=stepQKs)
    stepQKs[0] *= eta_mu
    stepQKs[1] *= -eta_mu
    if clean:
        if values:
            np.multiply(-2.0, eta_l1, out=stepVh)        # law 2
            stepVs.fill(-2.0 * eta_mu)                   # law 1
    else:
        np.multiply(-2.0 * eta_l1, c, out=stepVh)        # sign(hV_i) = sigma_i
        np.sign(np.add.reduce(-c * abs_l * Ssum[1], axis=0), out=stepVs[0])
        stepVs *= 2.0 * eta_mu
    return margin, S


def _signgd_log_direction(x, c, eta_l1, eta_mu, *, clean, out):
    """:func:`signgd_direction` from :func:`gradient_signs_log` (near underflow; rare,
    so written for clarity)."""
    QKn, QKs, Vh, Vs = x[1:]
    stepQKn, stepQKs, stepVh, stepVs = out[1:]
    dK = QKn[1] - QKs[1]                              # (m_k, n, R) Kh - Ks
    gap = np.stack([np.einsum("sxr,sir->ir", QKs[0], dK),      # z_sn - z_ss
                    np.einsum("sir,sir->ir", QKn[0], dK)])     # z_nn - z_ns
    S = expit(np.stack([gap, -gap]))                  # [[S_sn, S_nn], [S_ss, S_ns]]
    margin = c * (S[1].sum(0) * Vs + S[0].sum(0) * Vh)
    signs = gradient_signs_log(ScoreGaps(dK, gap, margin), QKs, QKn, Vs, Vh, c, clean=clean)
    np.sign(signs.H, out=stepQKn)
    stepQKn *= eta_l1
    np.multiply(eta_mu, np.sign(signs.g), out=stepQKs)
    np.multiply(2.0 * eta_l1, np.sign(signs.hV), out=stepVh)
    np.multiply(2.0 * eta_mu, np.sign(signs.gV), out=stepVs)
    return margin, S
