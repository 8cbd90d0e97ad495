"""The optimizers of :mod:`simulator.optimizers` as exact update rules on the reduced
state (``SETTING.md`` sections 3, 5 and 9).

On sample ``i``'s support the gradient of a weight row is ``xi_ik`` times a scalar
``h`` (:mod:`simulator.reduced_dynamics`), and on coordinate 0 it is ``||mu||``
times a scalar ``g``. Write ``a_k`` for the magnitudes of the coordinates a quantity
lives on: ``a = (|xi_i1|, ..., |xi_is|)`` for the noise quantities of sample ``i``,
``a = (||mu||)`` for the signal quantities. A full-engine step
``W <- W - eta * P(grad L)`` then moves each quantity ``X`` (``Qs, Ks, Qh, Kh``) by
``-eta * Phi`` and the value quantities ``Vs, Vh`` by ``-2 eta * Phi`` (``W_{V,+1}``
and ``W_{V,-1}`` move in opposite directions), where, per optimizer:

* SignGD, ``P = sign(G)``: ``Phi = ||a||_1 sign(h)``. With clean labels this gives
  the six laws of section 5: ``Vs += 2 eta ||mu||``, ``Vn_i += 2 eta ||xi_i||_1``,
  ``Qn_si += eta ||xi_i||_1 sign(Vn_i - Vs) sign(Kn_si - Ks_s)``, and so on.
* GD, ``P = G``: ``Phi = ||a||_2^2 h``.
* Adam: per coordinate ``m_k = xi_k M`` and ``v_k = xi_k^2 V`` exactly, with the
  scalar moments ``M <- beta1 M + (1 - beta1) h``, ``V <- beta2 V + (1 - beta2) h^2``
  (from zero, so the factorization holds at every step). With
  ``M_hat = M / (1 - beta1^t)``, ``V_hat = V / (1 - beta2^t)`` (``t`` from 1)::

      Phi = M_hat * sum_k a_k^2 / (a_k sqrt(V_hat) + eps)

  (a term with a zero denominator is 0, as in the full engine). Every row of
  ``W_{V,+1}`` sees the same gradient, hence the same moments, so the value
  quantities need one moment pair per sample and one for the signal: the per-row
  initial weights enter only through their mean, which is ``Vs``.
* Signum, ``P = sign(m)``: ``Phi = ||a||_1 sign(M)``.
* NormGD, ``P = G / ||G||_2``: ``Phi = ||a||_2^2 h / ||G||_2`` with
  ``||G||_2^2 = ||mu||^2 (sum_s gQ_s^2 + gK_s^2 + 2 m_v gV^2)
  + sum_i ||xi_i||_2^2 (sum_s hQ_si^2 + hK_si^2 + 2 m_v hV_i^2)``.

Each optimizer's :meth:`step` returns the update of ``(QKn, QKs, Vh, Vs)``,
``eta`` and the value factor 2 included, so the loop applies
``X <- X - step``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .config import SimulationConfig
from .reduced_dynamics import Gradient


class Magnitudes(NamedTuple):
    """The coordinate magnitudes ``a_k`` the quantities live on (run axis last)."""

    mu: float              # ||mu||
    l1: np.ndarray         # (n, R)     ||xi_i||_1
    l2sq: np.ndarray       # (n, R)     ||xi_i||_2^2
    abs_xi: np.ndarray     # (s, n, R)  |xi_ik|


class Step(NamedTuple):
    """Updates ``X <- X - step`` of the reduced state."""

    QKn: np.ndarray        # (2, m_k, n, R)
    QKs: np.ndarray        # (2, m_k, 1, R)
    Vh: np.ndarray         # (n, R)
    Vs: np.ndarray         # (1, R)


class SignGD:
    """``Phi = ||a||_1 sign(h)``: expects the exact signs of
    :func:`~simulator.reduced_dynamics.gradient_signs`."""

    exact_signs = True

    def __init__(self, eta: float, mag: Magnitudes):
        self.eta_l1 = eta * mag.l1                    # (n, R)
        self.eta_mu = eta * mag.mu

    def init_state(self, grad_shapes: Gradient) -> Any:
        return None

    def step(self, grad: Gradient, state: Any, t: int) -> tuple[Step, Any]:
        H = np.sign(grad.H, out=grad.H)
        H *= self.eta_l1 if grad.H_sign is None else self.eta_l1 * grad.H_sign
        return Step(H, self.eta_mu * np.sign(grad.g), 2.0 * self.eta_l1 * np.sign(grad.hV),
                    2.0 * self.eta_mu * np.sign(grad.gV)), state


class GD:
    """``Phi = ||a||_2^2 h``."""

    exact_signs = False

    def __init__(self, eta: float, mag: Magnitudes):
        self.eta_l2sq = eta * mag.l2sq
        self.eta_mu2 = eta * mag.mu ** 2

    def init_state(self, grad: Gradient) -> Any:
        return None

    def step(self, grad: Gradient, state: Any, t: int) -> tuple[Step, Any]:
        H = grad.H
        H *= self.eta_l2sq
        return Step(H, self.eta_mu2 * grad.g, 2.0 * self.eta_l2sq * grad.hV,
                    2.0 * self.eta_mu2 * grad.gV), state


def _adam_sum(a: np.ndarray, r: np.ndarray, eps: float) -> np.ndarray:
    """``sum_k a_k^2 / (a_k r + eps)`` over the leading axis of ``a`` (a term with a
    zero denominator is 0). ``a``: (s, ...) broadcastable against ``r``."""
    denom = a * r + eps
    terms = np.divide(a * a, denom, out=np.zeros(denom.shape), where=denom > 0)
    return terms.sum(0)


class Adam:
    """Scalar moments per quantity; ``Phi = M_hat sum_k a_k^2 / (a_k sqrt(V_hat) + eps)``."""

    exact_signs = False

    def __init__(self, eta: float, mag: Magnitudes, beta1: float, beta2: float, eps: float):
        self.eta, self.mag = eta, mag
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.a_noise = mag.abs_xi                     # (s, n, R)
        self.a_H = mag.abs_xi[:, None, None]          # (s, 1, 1, n, R)

    def init_state(self, grad: Gradient) -> Any:
        return [(np.zeros(x.shape), np.zeros(x.shape)) for x in grad[:4]]

    def step(self, grad: Gradient, state: Any, t: int) -> tuple[Step, Any]:
        b1, b2 = self.beta1, self.beta2
        bc1, bc2 = 1.0 - b1 ** (t + 1), 1.0 - b2 ** (t + 1)
        new_state, phis = [], []
        a_of = (self.a_H, self.mag.mu, self.a_noise, self.mag.mu)   # H, g, hV, gV
        for h, (M, V), a in zip(grad[:4], state, a_of):
            M = b1 * M + (1.0 - b1) * h
            V = b2 * V + (1.0 - b2) * np.square(h)
            r = np.sqrt(V / bc2)                      # sqrt(V_hat)
            if np.ndim(a) == 0:                       # one coordinate: ||mu||
                denom = a * r + self.eps
                A = np.divide(a * a, denom, out=np.zeros(denom.shape), where=denom > 0)
            else:
                A = _adam_sum(a, r, self.eps)
            phis.append(M / bc1 * A)
            new_state.append((M, V))
        e = self.eta
        return Step(e * phis[0], e * phis[1], 2.0 * e * phis[2], 2.0 * e * phis[3]), new_state


class Signum:
    """``Phi = ||a||_1 sign(M)`` with ``M <- beta1 M + (1 - beta1) h``."""

    exact_signs = False

    def __init__(self, eta: float, mag: Magnitudes, beta1: float):
        self.eta_l1, self.eta_mu, self.beta1 = eta * mag.l1, eta * mag.mu, beta1

    def init_state(self, grad: Gradient) -> Any:
        return [np.zeros(x.shape) for x in grad[:4]]

    def step(self, grad: Gradient, state: Any, t: int) -> tuple[Step, Any]:
        b1 = self.beta1
        M = [b1 * m + (1.0 - b1) * h for m, h in zip(state, grad[:4])]
        return Step(self.eta_l1 * np.sign(M[0]), self.eta_mu * np.sign(M[1]),
                    2.0 * self.eta_l1 * np.sign(M[2]), 2.0 * self.eta_mu * np.sign(M[3])), M


class NormGD:
    """``Phi = ||a||_2^2 h / ||G||_2`` with ``||G||_2`` from the scalars (module doc)."""

    exact_signs = False

    def __init__(self, eta: float, mag: Magnitudes, m_v: int):
        self.eta, self.mag, self.m_v = eta, mag, m_v

    def init_state(self, grad: Gradient) -> Any:
        return None

    def step(self, grad: Gradient, state: Any, t: int) -> tuple[Step, Any]:
        mu2, l2sq, m_v = self.mag.mu ** 2, self.mag.l2sq, self.m_v
        norm2 = (mu2 * (np.square(grad.g).sum((0, 1, 2)) + 2 * m_v * np.square(grad.gV[0]))
                 + (l2sq * (np.square(grad.H).sum((0, 1)) + 2 * m_v * np.square(grad.hV))).sum(0))
        norm = np.sqrt(norm2)                         # (R,)
        inv = np.divide(self.eta, norm, out=np.zeros(norm.shape), where=norm > 0)
        return Step(inv * l2sq * grad.H, inv * mu2 * grad.g, 2.0 * inv * l2sq * grad.hV,
                    2.0 * inv * mu2 * grad.gV), state


def make_reduced_optimizer(config: SimulationConfig, mag: Magnitudes):
    """The reduced update rule of ``config.optimizer``."""
    eta = config.eta
    if config.optimizer == "signgd":
        return SignGD(eta, mag)
    if config.optimizer == "gd":
        return GD(eta, mag)
    if config.optimizer == "adam":
        return Adam(eta, mag, config.beta1, config.beta2, config.eps)
    if config.optimizer == "signum":
        return Signum(eta, mag, config.beta1)
    return NormGD(eta, mag, config.m_v)
