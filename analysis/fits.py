"""Fits and outcome predictions from measured quantities (``SETTING.md`` sections 6-7).

* :func:`s21_decay`: is ``log s_{i,21}`` linear or quadratic in ``t`` during Stage IV?
  The theory says quadratic: ``Qn``, ``Kn`` grow linearly, so the score gap
  ``g_i = log(s_{i,22} / s_{i,21}) = z_{i,22} - z_{i,21}`` grows like ``t^2``.
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

import numpy as np
from scipy.special import ndtr

from simulator import History

from .quantities import Quantities, recorded


def _r2(y: np.ndarray, fit: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - fit) ** 2).sum()) / ss if ss > 0 else 1.0


def classify_growth(t: np.ndarray, g: np.ndarray) -> tuple[str, float, float]:
    """``"linear"``, ``"quadratic"`` or ``"other"`` for ``g(t)``, with the R^2 of the
    linear and quadratic least-squares fits. Linear when a line explains 99.9% of the
    variance; quadratic when the quadratic term is positive, the quadratic fit explains
    99% and removes at least 90% of the linear fit's residual; linear again if a line
    still explains 99%; otherwise other."""
    if t.size < 5 or not np.isfinite(g).all():
        return "undetermined", math.nan, math.nan
    ts = (t - t.mean()) / max(t.std(), 1e-300)
    p1 = np.polyfit(ts, g, 1)
    p2 = np.polyfit(ts, g, 2)
    r2_lin, r2_quad = _r2(g, np.polyval(p1, ts)), _r2(g, np.polyval(p2, ts))
    if r2_lin >= 0.999:
        return "linear", r2_lin, r2_quad
    if r2_quad >= 0.99 and p2[0] > 0 and (1 - r2_quad) <= 0.1 * (1 - r2_lin):
        return "quadratic", r2_lin, r2_quad
    if r2_lin >= 0.99:
        return "linear", r2_lin, r2_quad
    return "other", r2_lin, r2_quad


def s21_decay(q: Quantities, start: np.ndarray) -> list[dict]:
    """Per run: the decay form of ``s_{i,21}`` from step ``start[r]`` (e.g. ``T2``) on.

    Returns one dict per run: ``form`` (majority over samples of
    :func:`classify_growth` of the score gap), ``forms`` (per sample) and the median R^2
    of the linear and quadratic fits.
    """
    out = []
    for r in range(q.R):
        t0 = start[r] if np.isfinite(start[r]) else q.step[0]
        forms, r2l, r2q = [], [], []
        for i in range(q.Vn.shape[-1]):
            s21, s22 = q.s21[:, r, i], q.s22[:, r, i]
            keep = (q.step >= t0) & (s21 > 0) & (s22 > 0)
            with np.errstate(divide="ignore"):
                g = np.log(s22[keep]) - np.log(s21[keep])
            f, a, b = classify_growth(q.step[keep].astype(float), g)
            forms.append(f)
            r2l.append(a)
            r2q.append(b)
        names, counts = np.unique(forms, return_counts=True)
        form = str(names[np.argmax(counts)]) if forms else "undetermined"
        out.append({"form": form, "forms": forms,
                    "r2_linear": float(np.nanmedian(r2l)) if np.isfinite(r2l).any() else math.nan,
                    "r2_quadratic": float(np.nanmedian(r2q)) if np.isfinite(r2q).any() else math.nan})
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
        dm = 2 * q.eta * ((q.s11[w, r] + q.s21[w, r]) * q.mu_norm
                          + (q.s12[w, r] + q.s22[w, r]) * q.xi_l1[r])   # (Tw, n)
        lp = np.abs(q.lprime[w, r])
        pred = (lp * dm).mean(-1) / np.where(Lw > 0, Lw, np.nan)
        out.append({"rate": float(-p[0]), "predicted_rate": float(np.nanmean(pred)),
                    "r2": float(r2)})
    return out


def heldout_hit_fraction(cfg, overlap: float) -> float:
    """Fraction of test inputs touching at least one trained coordinate,
    ``1 - (1 - f)^s`` for a recorded overlap fraction ``f``; 0 for the reduced engine,
    which evaluates test inputs on fresh supports by construction."""
    if getattr(cfg, "engine", "full") == "reduced":
        return 0.0
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
            "tolerance": 3 * math.sqrt(max(corrected * (1 - corrected), 1e-4) / cfg.n_test),
            "train_test_margin_ratio": (margin_train / margin_test if margin_test != 0 else math.inf),
        })
    return out
