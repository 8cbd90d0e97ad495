"""Optimizers, each defined once on arrays (``docs/theory.md`` section 3).

An optimizer maps a gradient array ``g`` and its own state to a direction ``P``;
the engine applies ``W <- W - eta * P``. Every optimizer here is *elementwise*
(``P`` at an entry depends on that entry's gradient history only), *odd*
(``P(-g) = -P(g)`` when every odd state flips sign with it) and starts from a zero
state. Those three properties are what lets the reduced engine apply the same
definition to its quantities exactly (:mod:`simulator.reduced_dynamics`): it calls
:meth:`Optimizer.direction` on the gradients of the weight coordinates a quantity
lives on, written as ``a_k h`` with ``a_k`` the coordinates' magnitudes. The one
optimizer that is not elementwise, NormGD, asks for the gradient's global norm per
run (``needs_norm``), which each engine computes from its own representation.

=========  ==============================================================  ==============
name       update (``t`` counts steps from 1)                             defaults
=========  ==============================================================  ==============
signgd     ``P = sign(g)``, ``sign(0) = 0``
gd         ``P = g``
adam       ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,           b1 0.9, b2 0.999,
           ``P = m_hat / (sqrt(v_hat) + eps)``, ``m_hat = m / (1-b1^t)``,  eps 1e-8
           ``v_hat = v / (1-b2^t)``; ``P = 0`` where the denominator is 0
signum     ``m <- b1 m + (1-b1) g``, ``P = sign(m)``                       b1 0.9
normgd     ``P = g / ||g||_2`` (the norm over all weights of a run)
lion       ``P = sign(b1 m + (1-b1) g)``, then ``m <- b2 m + (1-b2) g``    b1 0.9, b2 0.99
=========  ==============================================================  ==============

With ``beta1 = beta2 = 0`` and ``eps -> 0`` Adam is SignGD.

Adding an optimizer
-------------------
Write one class here with a ``name``, its ``defaults`` for the hyper-parameters it
reads (``beta1``, ``beta2``, ``eps``; the config's value ``None`` means "the
optimizer's own default"), ``sign_like`` (does a step move a coordinate by about
``eta`` whatever the gradient's size? SignGD's closed-form predictions then apply),
``init`` and ``direction``, and decorate it with :func:`register`. The config's
choices, the command line, both engines, sweeps and the analysis pick it up from
the registry. Keep it elementwise, odd and zero-initialised (see above), or the
reduced engine's lift is not exact; ``docs/architecture.md`` walks through Lion.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError

#: name -> optimizer class, in registration order.
REGISTRY: dict[str, type["Optimizer"]] = {}


def register(cls: type["Optimizer"]) -> type["Optimizer"]:
    """Class decorator: add ``cls`` to :data:`REGISTRY` under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


class Optimizer:
    """Base class: an elementwise, odd, zero-initialised update rule (module doc)."""

    name: ClassVar[str]
    #: Hyper-parameters read from the config, with this optimizer's own defaults.
    defaults: ClassVar[dict[str, float]] = {}
    #: A step moves every coordinate with a non-zero gradient by about eta.
    sign_like: ClassVar[bool] = False
    #: ``direction`` needs the gradient's global norm per run (``norm=``).
    needs_norm: ClassVar[bool] = False

    def __init__(self, **hyper: float):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{self.name} takes {sorted(self.defaults)}, got {sorted(unknown)}")
        for key, value in {**self.defaults, **hyper}.items():
            setattr(self, key, value)

    def init(self, g: np.ndarray) -> Any:
        """The zero state for gradients shaped like ``g``."""
        return None

    def direction(self, g: np.ndarray, state: Any, t: int, norm: np.ndarray | None = None):
        """Direction ``P`` of step ``t`` (0-based) and the new state. ``P`` is ``g``
        itself or a new array, never an array of the state: the full engine scales a
        new ``P`` by ``eta`` in place."""
        raise NotImplementedError


@register
class SignGD(Optimizer):
    """``P = sign(g)``."""

    name = "signgd"
    sign_like = True

    def direction(self, g, state, t, norm=None):
        return np.sign(g), state


@register
class GD(Optimizer):
    """``P = g``."""

    name = "gd"

    def direction(self, g, state, t, norm=None):
        return g, state


@register
class Adam(Optimizer):
    """``P = m_hat / (sqrt(v_hat) + eps)`` with bias-corrected moments."""

    name = "adam"
    defaults = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    sign_like = True

    def init(self, g):
        return np.zeros_like(g), np.zeros_like(g)

    def direction(self, g, state, t, norm=None):
        m, v = state
        m = self.beta1 * m + (1.0 - self.beta1) * g              # m <- b1 m + (1 - b1) g
        v = self.beta2 * v + (1.0 - self.beta2) * np.square(g)   # v <- b2 v + (1 - b2) g^2
        m_hat = m / (1.0 - self.beta1 ** (t + 1))
        v_hat = v / (1.0 - self.beta2 ** (t + 1))
        denom = np.sqrt(v_hat) + self.eps
        P = np.divide(m_hat, denom, out=np.zeros_like(m_hat), where=denom > 0)
        return P, (m, v)


@register
class Signum(Optimizer):
    """``P = sign(m)``, ``m <- b1 m + (1 - b1) g``."""

    name = "signum"
    defaults = {"beta1": 0.9}
    sign_like = True

    def init(self, g):
        return np.zeros_like(g)

    def direction(self, g, state, t, norm=None):
        m = self.beta1 * state + (1.0 - self.beta1) * g
        return np.sign(m), m


@register
class NormGD(Optimizer):
    """``P = g / ||g||_2``, the norm over every weight of a run (0 where it is 0)."""

    name = "normgd"
    needs_norm = True

    def direction(self, g, state, t, norm=None):
        return np.divide(g, norm, out=np.zeros(np.broadcast(g, norm).shape), where=norm > 0), state


@register
class Lion(Optimizer):
    """``P = sign(b1 m + (1 - b1) g)``, then ``m <- b2 m + (1 - b2) g`` (Chen et al. 2023)."""

    name = "lion"
    defaults = {"beta1": 0.9, "beta2": 0.99}
    sign_like = True

    def init(self, g):
        return np.zeros_like(g)

    def direction(self, g, state, t, norm=None):
        P = np.sign(self.beta1 * state + (1.0 - self.beta1) * g)
        return P, self.beta2 * state + (1.0 - self.beta2) * g


def names() -> tuple[str, ...]:
    """The registered optimizer names (the config's choices)."""
    return tuple(REGISTRY)


def is_sign_like(name: str) -> bool:
    """Whether the optimizer ``name`` is sign-like (SignGD's closed forms apply to it)."""
    return REGISTRY[name].sign_like


def make_optimizer(config) -> Optimizer:
    """The optimizer named by ``config.optimizer``, with the config's hyper-parameters
    (``None``: the optimizer's own default)."""
    try:
        cls = REGISTRY[config.optimizer]
    except KeyError:
        raise ConfigError(f"optimizer must be one of {', '.join(REGISTRY)}; "
                          f"got {config.optimizer!r}") from None
    hyper = {key: getattr(config, key) for key in cls.defaults
             if getattr(config, key, None) is not None}
    return cls(**hyper)


def hyper_parameters(config) -> dict[str, float]:
    """The hyper-parameters ``config``'s optimizer runs with (defaults resolved)."""
    return dict(vars(make_optimizer(config)))
