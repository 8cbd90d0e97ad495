"""Full-batch optimizers (``SETTING.md`` section 3).

Each optimizer maps the gradient ``G = grad L`` (and its own state) to a direction
``P``; the training loop applies ``W <- W - eta * P``. Adding an optimizer is a few
lines: a class with ``init_state`` and ``direction``.

* SignGD:  ``P = sign(G)``, with ``sign(0) = 0``.
* GD:      ``P = G``.
* Adam:    ``m <- beta1 m + (1 - beta1) G``,  ``v <- beta2 v + (1 - beta2) G^2``,
  ``P = m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - beta1^t)``,
  ``v_hat = v / (1 - beta2^t)`` (``t`` counts from 1). With ``beta1 = beta2 = 0``
  and ``eps -> 0`` this is SignGD; a coordinate with ``v_hat = 0`` gets ``P = 0``.
* Signum:  sign of the momentum ``m <- beta1 m + (1 - beta1) G``.
* NormGD:  ``P = G / ||G||_2`` per run.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .config import SimulationConfig


class Optimizer(Protocol):
    def init_state(self, W: np.ndarray) -> Any: ...

    def direction(self, G: np.ndarray, state: Any, t: int) -> tuple[np.ndarray, Any]:
        """Direction ``P`` for step ``t`` (0-based) and the new state."""


class SignGD:
    def init_state(self, W):
        return None

    def direction(self, G, state, t):
        return np.sign(G), state


class GD:
    def init_state(self, W):
        return None

    def direction(self, G, state, t):
        return G, state


class NormGD:
    def init_state(self, W):
        return None

    def direction(self, G, state, t):
        norm = np.sqrt(np.square(G).sum(axis=(-2, -1), keepdims=True))
        return np.divide(G, norm, out=np.zeros_like(G), where=norm > 0), state


class Adam:
    def __init__(self, beta1: float, beta2: float, eps: float):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def init_state(self, W):
        return np.zeros_like(W), np.zeros_like(W)

    def direction(self, G, state, t):
        m, v = state
        m = self.beta1 * m + (1.0 - self.beta1) * G
        v = self.beta2 * v + (1.0 - self.beta2) * np.square(G)
        m_hat = m / (1.0 - self.beta1 ** (t + 1))
        v_hat = v / (1.0 - self.beta2 ** (t + 1))
        denom = np.sqrt(v_hat) + self.eps
        P = np.divide(m_hat, denom, out=np.zeros_like(G), where=denom > 0)
        return P, (m, v)


class Signum:
    def __init__(self, beta1: float):
        self.beta1 = beta1

    def init_state(self, W):
        return np.zeros_like(W)

    def direction(self, G, state, t):
        m = self.beta1 * state + (1.0 - self.beta1) * G
        return np.sign(m), m


#: Optimizers whose step moves a coordinate by about ``eta`` whatever the gradient's
#: size (the sign-like methods the theory's SignGD predictions speak of).
SIGN_LIKE = ("signgd", "adam", "signum", "lion")


def is_sign_like(name: str) -> bool:
    """Whether the optimizer ``name`` is sign-like (SignGD's closed forms apply to it)."""
    return name in SIGN_LIKE


def make_optimizer(config: SimulationConfig) -> Optimizer:
    """The optimizer named by ``config.optimizer``."""
    if config.optimizer == "signgd":
        return SignGD()
    if config.optimizer == "gd":
        return GD()
    if config.optimizer == "adam":
        return Adam(config.beta1, config.beta2, config.eps)
    if config.optimizer == "signum":
        return Signum(config.beta1)
    return NormGD()
