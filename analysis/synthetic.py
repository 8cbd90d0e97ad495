"""Hand-built histories, for tests and for teaching: a :class:`simulator.History` made
from given section-4 arrays, and the exact SignGD evolution of the theory's state.

:func:`make_history` fills every recorded array that is not given with a neutral
default, so a test can set only what a detector looks at.

:func:`law_history` evolves the closed state ``(Vs, Vn_i, Qs_s, Ks_s, Qn_si, Kn_si)`` of
``docs/theory.md`` section 9 by laws 1-6 (section 5), with the softmax and ``l'_i`` computed
from the state::

    z_11 = sum_s Qs Ks,  z_12 = sum_s Qs Kn_si,  z_21 = sum_s Qn_si Ks,  z_22 = sum_s Qn_si Kn_si
    s_l1 = sigmoid(z_l1 - z_l2),  s_l2 = sigmoid(z_l2 - z_l1)
    y_i f_i = sum_l (s_l1 Vs + s_l2 Vn_i),  l'_i = -1 / (1 + exp(y_i f_i))

so the laws hold by construction and every stage time can be computed independently.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from simulator import History, SimulationConfig


def make_history(config: SimulationConfig, T: int, **arrays: np.ndarray) -> History:
    """A history of ``T`` records of ``config`` (``R = n_seeds``) with the given arrays;
    missing ones get defaults: steps ``0 .. T-1``, zero inner products, softmax 1/2,
    ``l' = -1/2``, ``||xi_i||_1 = 1``, clean labels, disjoint supports."""
    R, n, m_k = config.n_seeds, config.n, config.m_k
    ones = np.ones((R, n))
    out = {
        "step": np.arange(T), "wall_time": np.zeros(T),
        "train_loss": np.full((T, R), np.log(2)), "train_error": np.full((T, R), 0.5),
        "test_loss": np.full((T, R), np.log(2)), "test_error": np.full((T, R), 0.5),
        "test_margin_mean": np.zeros((T, R)), "test_margin_std": np.ones((T, R)),
        "margin": np.zeros((T, R, n)), "lprime": np.full((T, R, n), -0.5),
        "Vs": np.zeros((T, R)), "Vn": np.zeros((T, R, n)),
        "Qs": np.zeros((T, R, m_k)), "Ks": np.zeros((T, R, m_k)),
        "Qn": np.zeros((T, R, m_k, n)), "Kn": np.zeros((T, R, m_k, n)),
        "softmax": np.full((T, R, n, 2, 2), 0.5),
        "seeds": np.arange(config.seed, config.seed + R), "y": ones.copy(),
        "y_clean": ones.copy(), "xi_l1": ones.copy(), "xi_l2": ones.copy(),
        "signal_position": np.zeros((R, n), dtype=np.int64),
        "shared_coordinates": np.zeros((R, n), dtype=np.int64),
        "underflow_step": np.full((R, n), -1, dtype=np.int64),
        "test_overlap_fraction": np.zeros(R),
    }
    unknown = sorted(set(arrays) - set(out))
    if unknown:
        raise KeyError(f"unknown history array(s): {', '.join(unknown)}")
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.shape != out[name].shape:
            raise ValueError(f"{name} must have shape {out[name].shape}, got {value.shape}")
        out[name] = value
    return History(config, out)


def softmax_and_lprime(Vs, Vn, Qs, Ks, Qn, Kn):
    """Softmax ``(R, n, 2, 2)``, margins and ``l'`` ``(R, n)`` of the state (module doc)."""
    z11 = (Qs * Ks).sum(-1)[:, None] * np.ones(Vn.shape)          # (R, n)
    z12 = np.einsum("rs,rsi->ri", Qs, Kn)
    z21 = np.einsum("rsi,rs->ri", Qn, Ks)
    z22 = np.einsum("rsi,rsi->ri", Qn, Kn)
    s11, s12 = expit(z11 - z12), expit(z12 - z11)
    s21, s22 = expit(z21 - z22), expit(z22 - z21)
    S = np.stack([np.stack([s11, s12], -1), np.stack([s21, s22], -1)], -2)
    margin = (s11 + s21) * Vs[:, None] + (s12 + s22) * Vn
    return S, margin, -expit(-margin)


def signgd_step(state: dict, S, lprime, eta: float, mu_norm: float, xi_l1) -> dict:
    """One step of laws 1-6 (``docs/theory.md`` section 5) on the state dict."""
    Vs, Vn, Qs, Ks, Qn, Kn = (state[k] for k in ("Vs", "Vn", "Qs", "Ks", "Qn", "Kn"))
    s11, s12, s21, s22 = S[..., 0, 0], S[..., 0, 1], S[..., 1, 0], S[..., 1, 1]   # (R, n)
    h = (eta * xi_l1)[:, None, :]                                  # (R, 1, n)
    gap = Vn - Vs[:, None]                                         # (R, n)
    sg = np.sign(gap)[:, None, :]
    kd = Kn - Ks[..., None]                                        # (R, m_k, n)
    drive = (s11 * s12)[:, None, :] * Qs[..., None] + (s21 * s22)[:, None, :] * Qn
    w = np.abs(lprime) * gap                                       # (R, n)
    return {
        "Vs": Vs + 2 * eta * mu_norm,                                          # law 1
        "Vn": Vn + 2 * eta * xi_l1,                                            # law 2
        "Qn": Qn + h * sg * np.sign(kd),                                       # law 3
        "Kn": Kn + h * sg * np.sign(drive),                                    # law 4
        "Qs": Qs + eta * mu_norm * np.sign(((w * s11 * s12)[:, None, :] * kd).sum(-1)),  # law 5
        "Ks": Ks - eta * mu_norm * np.sign((w[:, None, :] * drive).sum(-1)),  # law 6
    }


def law_history(config: SimulationConfig, state0: dict, xi_l1: np.ndarray) -> History:
    """Evolve ``state0`` (arrays ``Vs (R,), Vn (R, n), Qs, Ks (R, m_k), Qn, Kn (R, m_k, n)``)
    for ``config.steps`` steps by laws 1-6 and record every step."""
    T = config.steps + 1
    rec = {k: [] for k in ("Vs", "Vn", "Qs", "Ks", "Qn", "Kn", "softmax", "margin", "lprime")}
    state = {k: np.asarray(v, float).copy() for k, v in state0.items()}
    for t in range(T):
        S, margin, lprime = softmax_and_lprime(**state)
        for k in ("Vs", "Vn", "Qs", "Ks", "Qn", "Kn"):
            rec[k].append(state[k])
        rec["softmax"].append(S)
        rec["margin"].append(margin)
        rec["lprime"].append(lprime)
        state = signgd_step(state, S, lprime, config.eta, config.mu_norm, xi_l1)
    arrays = {k: np.stack(v) for k, v in rec.items()}
    arrays["train_loss"] = np.logaddexp(0, -arrays["margin"]).mean(-1)
    return make_history(config, T, xi_l1=np.asarray(xi_l1, float), **arrays)
