"""Fits and outcome predictions from measured quantities (``docs/theory.md`` sections 6-7).

* :func:`s21_decay`: is ``log s_{i,21}`` linear or quadratic in ``t`` during Stage IV?
  The theory says quadratic: ``Qn``, ``Kn`` grow linearly, so the score gap
  ``g_i = log(s_{i,22} / s_{i,21}) = z_{i,22} - z_{i,21}`` grows like ``t^2``. Each
  sample gets its own line and parabola; the residual sums are pooled over samples,
  and the form follows from those pooled sums alone (:data:`GROWTH_RULE`): the AIC
  difference ``dAIC = N ln(RSS_lin / RSS_quad) - 2 n`` (``N`` points, ``n`` samples, one
  extra coefficient each), the pooled ``R^2`` of both fits and the sign of each
  sample's ``t^2`` coefficient (most must be positive: a sample whose minority pairs are
  flipping can bend the other way for a while).
* :func:`loss_rate`: the slope of ``log L`` over the last quarter of training, next to
  the rate laws 1-2 predict from the softmax: with the softmax frozen the margin
  ``y_i f_i = (s_i11 + s_i21) Vs + (s_i12 + s_i22) Vn_i`` grows by
  ``2 eta ((s_i11 + s_i21) ||mu|| + (s_i12 + s_i22) ||xi_i||_1)`` per step, and
  ``-d log L / dt = sum_i |l'_i| dm_i/dt / (n L)``.
* :func:`predict_test_error`: a fresh test input sees initial weights on its noise,
  so its margin is about ``Vs + N(0, sigma^2)`` with
  ``sigma = sigma_0 sigma_p sqrt(2 s / m_v)``; the error is ``Phi(-Vs / sigma)``. Test
  samples touching trained coordinates (fraction ``p_hit = 1 - (1 - f)^s`` with ``f``
  the recorded overlap fraction) have margins dominated by memorized weights of random
  sign, error about 1/2: ``(1 - p_hit) Phi(-Vs / sigma) + p_hit / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from simulator import History

from .quantities import Quantities, recorded


def _r2(y: np.ndarray, fit: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - fit) ** 2).sum()) / ss if ss > 0 else 1.0


AIC_MARGIN = 10.0
"""The quadratic fit must lower the AIC by more than this (a standard 'strong evidence'
threshold) to be preferred over the line."""
MIN_R2 = 0.99
"""The chosen form must explain at least this fraction of the variance; else ``other``."""
ROUNDING = 1e-12
"""Residuals below ``ROUNDING * max|g|`` per point are rounding, not misfit: this floor
is added to both residual sums, so a straight line recorded in float64 reads linear."""
MIN_POINTS = 5


@dataclass(frozen=True)
class GrowthFit:
    """Linear and quadratic least-squares fits of ``g(t)``, pooled over curves (samples).

    ``points``: data points; ``curves``: curves fitted (each has its own coefficients);
    ``ss``, ``rss_linear``, ``rss_quadratic``: total and residual sums of squares
    (pooled); ``convex``: curves whose ``t^2`` coefficient is positive.
    """

    points: int
    curves: int
    ss: float
    rss_linear: float
    rss_quadratic: float
    convex: int

    @property
    def r2_linear(self) -> float:
        return 1.0 - self.rss_linear / self.ss if self.ss > 0 else 1.0

    @property
    def r2_quadratic(self) -> float:
        return 1.0 - self.rss_quadratic / self.ss if self.ss > 0 else 1.0

    @property
    def delta_aic(self) -> float:
        """``AIC_lin - AIC_quad = N ln(RSS_lin / RSS_quad) - 2 n_curves`` (Gaussian
        residuals; the quadratic has one more coefficient per curve)."""
        if self.points == 0:
            return math.nan
        if self.rss_quadratic == 0.0:      # an exact quadratic: no better than an exact line
            return -2.0 * self.curves if self.rss_linear == 0.0 else math.inf
        return self.points * math.log(self.rss_linear / self.rss_quadratic) - 2 * self.curves

    @property
    def form(self) -> str:
        """``linear``, ``quadratic``, ``other`` or ``undetermined`` (:data:`GROWTH_RULE`)."""
        if self.curves == 0:
            return "undetermined"
        if self.delta_aic > AIC_MARGIN:
            ok = 2 * self.convex > self.curves and self.r2_quadratic >= MIN_R2
            return "quadratic" if ok else "other"
        return "linear" if self.r2_linear >= MIN_R2 else "other"

    def describe(self) -> str:
        """The statistics the form is chosen from, as one line."""
        if self.curves == 0:
            return "fewer than 5 points"
        return (f"R2 lin {self.r2_linear:.3f}, quad {self.r2_quadratic:.3f}; "
                f"dAIC {self.delta_aic:.3g}; t^2 > 0 in {self.convex}/{self.curves}")


GROWTH_RULE = (f"quadratic if dAIC > {AIC_MARGIN:g}, t^2 > 0 in most samples and R2 quad >= "
               f"{MIN_R2:g}; linear if dAIC <= {AIC_MARGIN:g} and R2 lin >= {MIN_R2:g}; "
               "else other (pooled over samples)")
"""The model-selection rule of :attr:`GrowthFit.form`, as the report states it."""


def fit_growth(curves: list[tuple[np.ndarray, np.ndarray]]) -> GrowthFit:
    """Pooled linear and quadratic fits of the curves ``(t, g)`` (each with its own
    coefficients); curves with fewer than :data:`MIN_POINTS` finite points are skipped."""
    points = used = convex = 0
    ss = rss1 = rss2 = 0.0
    for t, g in curves:
        keep = np.isfinite(g)
        t, g = np.asarray(t, float)[keep], np.asarray(g, float)[keep]
        if t.size < MIN_POINTS:
            continue
        ts = (t - t.mean()) / max(t.std(), 1e-300)
        p1, p2 = np.polyfit(ts, g, 1), np.polyfit(ts, g, 2)
        floor = t.size * (ROUNDING * float(np.abs(g).max())) ** 2
        points += t.size
        used += 1
        convex += int(p2[0] > 0)
        ss += float(((g - g.mean()) ** 2).sum()) + floor
        rss1 += float(((g - np.polyval(p1, ts)) ** 2).sum()) + floor
        rss2 += float(((g - np.polyval(p2, ts)) ** 2).sum()) + floor
    return GrowthFit(points, used, ss, rss1, rss2, convex)


def classify_growth(t: np.ndarray, g: np.ndarray) -> tuple[str, float, float]:
    """``"linear"``, ``"quadratic"``, ``"other"`` or ``"undetermined"`` for one curve
    ``g(t)`` (:data:`GROWTH_RULE`), with the R^2 of the linear and quadratic fits."""
    fit = fit_growth([(t, g)])
    if fit.curves == 0:
        return "undetermined", math.nan, math.nan
    return fit.form, fit.r2_linear, fit.r2_quadratic


def s21_decay(q: Quantities, start: np.ndarray) -> list[GrowthFit]:
    """Per run: the pooled fit of the score gap ``g_i = log s_i22 - log s_i21`` of every
    sample against ``t``, from step ``start[r]`` (e.g. ``T2``) on (module doc);
    records where a softmax output is exactly 0 are left out."""
    out = []
    for r in range(q.R):
        t0 = start[r] if np.isfinite(start[r]) else q.step[0]
        curves = []
        for i in range(q.Vn.shape[-1]):
            s21, s22 = q.s21[:, r, i], q.s22[:, r, i]
            keep = (q.step >= t0) & (s21 > 0) & (s22 > 0)
            curves.append((q.step[keep], np.log(s22[keep]) - np.log(s21[keep])))
        out.append(fit_growth(curves))
    return out


def loss_rate(history: History, q: Quantities, *, tail: float = 0.25) -> list[dict]:
    """Per run: fitted ``-d log L / dt`` over the last ``tail`` of the records, the rate
    laws 1-2 predict there (module doc, averaged over the window) and the fit's R^2."""
    step = q.step.astype(float)
    loss = history["train_loss"]                                  # (T, R)
    k0 = int(np.floor((1 - tail) * (step.size - 1)))
    out = []
    for r in range(q.R):
        w = slice(k0, None)
        t, Lw = step[w], loss[w, r]
        ok = (Lw > 0) & np.isfinite(Lw)
        if ok.sum() < 3:
            out.append({"rate": math.nan, "predicted_rate": math.nan, "r2": math.nan})
            continue
        logL = np.log(Lw[ok])
        p = np.polyfit(t[ok], logL, 1)
        r2 = _r2(logL, np.polyval(p, t[ok]))
        # laws 1-2 move u_k by 2 eta ||x_k||; the margin by sum_k (sum_l s_lk) du_k
        col = q.S[w, r].sum(-2)                                    # (Tw, n, L) sum_l s_i,lk
        dm = 2 * q.eta * (col[..., 0] * q.mu_norm
                          + (col[..., 1:] * q.per_sample(q.xi_l1[r])).sum(-1))   # (Tw, n)
        lp = np.abs(q.lprime[w, r])
        pred = (lp * dm).mean(-1) / np.where(Lw > 0, Lw, np.nan)
        out.append({"rate": float(-p[0]), "predicted_rate": float(np.nanmean(pred)),
                    "r2": float(r2)})
    return out


def heldout_hit_fraction(cfg, overlap: float) -> float:
    """Fraction of test inputs touching at least one trained coordinate,
    ``1 - (1 - f)^s`` for the recorded fraction ``f`` of the evaluated test inputs'
    noise coordinates that are trained (0 when test inputs sit on fresh supports)."""
    s_eff = cfg.s if cfg.noise == "sparse" else cfg.d - 1
    return 1.0 - (1.0 - overlap) ** s_eff


def predict_test_error(history: History, q: Quantities) -> list[dict]:
    """Per run: the predicted test error (fresh noise only, and corrected for test
    samples touching trained coordinates) next to the measured one (module doc)."""
    cfg = history.config
    sigma = cfg.sigma_0 * cfg.sigma_p * math.sqrt(2 * cfg.s / cfg.m_v) if cfg.noise == "sparse" \
        else cfg.sigma_0 * cfg.sigma_p * math.sqrt(2 * (cfg.d - 1) / cfg.m_v)
    overlap = np.asarray(recorded(history, "test_overlap_fraction", np.zeros(q.R)), float)
    out = []
    for r in range(q.R):
        Vs = float(q.Vs[-1, r])
        if sigma > 0:
            fresh = float(ndtr(-Vs / sigma))
        else:
            fresh = 0.0 if Vs > 0 else (0.5 if Vs == 0 else 1.0)
        p_hit = heldout_hit_fraction(cfg, float(overlap[r]))
        corrected = (1 - p_hit) * fresh + p_hit / 2
        margin_train = float(np.mean(history["margin"][-1, r]))
        margin_test = float(history["test_margin_mean"][-1, r])
        out.append({
            "value_signal": Vs, "fresh_noise_std": sigma,
            "predicted_fresh": fresh, "p_hit": p_hit, "predicted": corrected,
            "measured": float(history["test_error"][-1, r]),
            "binomial_sd": math.sqrt(max(corrected * (1 - corrected), 1e-4) / cfg.n_test),
            "train_test_margin_ratio": (margin_train / margin_test if margin_test != 0 else math.inf),
        })
    return out
