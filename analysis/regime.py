"""Is a configuration inside the regime the theory assumes? (``SETTING.md`` sections 1, 5, 6)

Each condition is measured from the config and the recorded history, compared with a
stated bound, and explained in one line. A prediction that fails outside the regime is
reported as "outside regime", not as a finding against the theory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from simulator import History
from simulator.data import expected_shared_coordinates

from .fits import heldout_hit_fraction
from .quantities import Quantities, recorded


SIGN_LIKE = ("signgd", "signum", "adam")
"""Optimizers whose steps move every coordinate by about ``eta`` (the step-size condition
applies to them only)."""


@dataclass(frozen=True)
class Condition:
    """One assumption: its measured ``value``, the ``bound``, and whether it holds."""

    name: str
    value: float
    bound: str
    ok: bool
    why: str
    affects: str = "dynamics"    # "dynamics" (in_regime) or "test" (test-error prediction only)

    def to_dict(self) -> dict:
        return asdict(self)


def conditions(history: History, q: Quantities, r: int = 0) -> list[Condition]:
    """The regime conditions of run ``r``."""
    cfg = history.config
    n, s, d = cfg.n, cfg.s, cfg.d
    xi_l1 = q.xi_l1[r]
    mean_l1 = float(xi_l1.mean()) if xi_l1.size else 0.0
    out = [
        Condition("sparse noise", float(cfg.noise == "sparse" and cfg.sigma_p > 0), "= 1", 
                  cfg.noise == "sparse" and cfg.sigma_p > 0,
                  "the laws are stated for the sparse noise patch with sigma_p > 0"),
        Condition("clean labels, signal in patch 1", float(q.clean[r].mean()), "= 1",
                  bool(q.clean[r].all()),
                  "laws 1-6 assume y_i = y_clean_i and the signal in patch 1"),
    ]
    expected_shared = (expected_shared_coordinates(n, s, d) if cfg.noise == "sparse"
                       else math.inf)             # about n (n-1) s^2 / (2d)
    out.append(Condition("expected shared coordinates ~ n(n-1) s^2 / (2d)", expected_shared, "< 1",
                         expected_shared < 1,
                         "disjoint supports: samples sharing coordinates break laws 2-4"))
    shared_frac = float((q.shared[r] > 0).mean())
    out.append(Condition("fraction of samples sharing coordinates", shared_frac, "<= 0.25",
                         shared_frac <= 0.25, "these samples are checked apart"))
    ratio = cfg.mu_norm / mean_l1 if mean_l1 > 0 else math.inf
    out.append(Condition("||mu|| / mean ||xi||_1", ratio, "< 0.1", ratio < 0.1,
                         "value noise must outgrow value signal (Stage I)"))
    z0 = float(np.abs(q.scores(0)[0, r]).max())
    out.append(Condition("max initial |z_lk|", z0, "< 0.1", z0 < 0.1,
                         "small initial scores keep the softmax near 1/2 and stages apart"))
    pair = np.abs(q.Qn[0, r] + q.Kn[0, r])                         # (m_k, n)
    if cfg.optimizer in SIGN_LIKE:
        step_ratio = float(np.median(q.noise_step[r][None, :] / np.maximum(pair, 1e-300)))
        out.append(Condition("median eta ||xi_i||_1 / |Qn + Kn| at t=0", step_ratio, "< 0.1",
                             step_ratio < 0.1,
                             "steps small next to the pairs: alignment follows the pair's sum"))
    overlap = float(recorded(history, "test_overlap_fraction", np.zeros(q.R))[r])
    p_hit = heldout_hit_fraction(cfg, overlap)
    out.append(Condition("test samples touching trained coordinates", p_hit, "< 0.05",
                         p_hit < 0.05,
                         "the test-error theory assumes test noise on fresh coordinates",
                         affects="test"))
    return out


def in_regime(conds: list[Condition]) -> bool:
    """All conditions on the training dynamics hold."""
    return all(c.ok for c in conds if c.affects == "dynamics")
