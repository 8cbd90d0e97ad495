"""The inner products the theory reasons about (``docs/theory.md`` section 4), read from a
recorded history, for one run or a batch of runs.

Dimension names are those of :mod:`simulator.config`: ``T`` recorded steps, ``R`` runs,
``n`` samples, ``m_k`` query/key neurons, ``L`` patches and ``noise`` the noise patches
``n (L - 1)`` (patch-major; with two patches the samples). Everything here is a pure
function of the recorded arrays and the config; nothing reaches into the simulator's
internals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator import History


@dataclass(frozen=True)
class Quantities:
    """Section-4 quantities of a batch of runs.

    Attributes
    ----------
    step : (T,) int
        Training step of each record (state before the update of that step).
    Vs : (T, R)
        Mean value signal ``<vbar, mu>``.
    Vn : (T, R, noise)
        Mean value noise ``<vbar, y_i xi_ij>``.
    Qs, Ks : (T, R, m_k)
        Query / key signal ``<w_{Q,s}, mu>``, ``<w_{K,s}, mu>``.
    Qn, Kn : (T, R, m_k, noise)
        Query / key noise ``<w_{Q,s}, y_i xi_ij>``, ``<w_{K,s}, y_i xi_ij>``.
    s11, s12, s21, s22 : (T, R, n)
        Softmax outputs ``s_{i,lk}`` of the signal patch (1) and the first noise patch
        (2): with two patches, the whole softmax.
    lprime : (T, R, n)
        Loss derivatives ``l'_i = -1 / (1 + exp(y_i f(X_i)))``.
    xi_l1 : (R, noise)
        ``||xi_ij||_1``.
    clean : (R, n) bool
        Sample satisfies the laws' data assumptions: observed label equals the
        signal's label and the signal sits in patch 1.
    shared : (R, noise) int
        Coordinates noise patch ``(i, j)`` shares with another noise patch.
    eta, mu_norm : float
        Learning rate and ``||mu||``.
    S : (T, R, n, L, L)
        The whole softmax ``s_{i,lk}`` (patch 0 = signal, then the noise patches).
    batch : (T, R, n) bool or None
        Sample ``i`` is in the mini-batch of the update from record ``t`` (None: every
        sample, full batches).
    alpha : float
        Feature noise: the noise patches are ``xi_ij - alpha y_i mu``.
    score_scale : float
        ``tau``: the scores are ``z_lk = tau <q_l, k_k>`` (:meth:`scores`).
    """

    step: np.ndarray
    Vs: np.ndarray
    Vn: np.ndarray
    Qs: np.ndarray
    Ks: np.ndarray
    Qn: np.ndarray
    Kn: np.ndarray
    s11: np.ndarray
    s12: np.ndarray
    s21: np.ndarray
    s22: np.ndarray
    lprime: np.ndarray
    xi_l1: np.ndarray
    clean: np.ndarray
    shared: np.ndarray
    eta: float
    mu_norm: float
    S: np.ndarray | None = None
    batch: np.ndarray | None = None
    alpha: float = 0.0
    score_scale: float = 1.0

    @property
    def R(self) -> int:
        return self.Vs.shape[1]

    @property
    def n(self) -> int:
        """Training samples."""
        return self.lprime.shape[-1]

    @property
    def n_patches(self) -> int:
        """``L``: the signal patch and ``L - 1`` noise patches."""
        return self.Vn.shape[-1] // self.n + 1

    def per_sample(self, a: np.ndarray) -> np.ndarray:
        """A noise array ``(..., noise)`` as ``(..., n, L - 1)``: sample, then its patches."""
        return np.swapaxes(a.reshape(a.shape[:-1] + (self.n_patches - 1, self.n)), -1, -2)

    def noise_axis(self, a: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`per_sample`: ``(..., n, L - 1)`` as ``(..., noise)``."""
        return np.swapaxes(a, -1, -2).reshape(a.shape[:-2] + (a.shape[-2] * a.shape[-1],))

    def patch_stack(self, k=slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The projections of every patch of every sample at records ``k``, signal first:
        ``Q, K`` (T, R, n, L, m_k) (``Qs_s`` then ``Qn_sij``, ...) and ``u`` (T, R, n, L)
        (``Vs`` then ``Vn_ij``), the arrays the scores and the laws are written in."""
        Qs, Ks, Vs = self.Qs[k], self.Ks[k], self.Vs[k]
        n = self.n

        def stack(signal, noise):                   # signal (T, R, m_k), noise (T, R, m_k, nP)
            noise = self.per_sample(noise)          # (T, R, m_k, n, P)
            out = np.empty(noise.shape[:2] + (n, noise.shape[-1] + 1, noise.shape[2]))
            out[:, :, :, 0] = signal[:, :, None, :]
            out[:, :, :, 1:] = np.moveaxis(noise, 2, -1)
            return out

        u = np.empty(Vs.shape + (n, self.n_patches))
        u[..., 0] = Vs[..., None]
        u[..., 1:] = self.per_sample(self.Vn[k])
        return stack(Qs, self.Qn[k]), stack(Ks, self.Kn[k]), u

    @property
    def value_gap(self) -> np.ndarray:
        """``Vn_i - Vs``, shape (T, R, n); its sign drives laws 3-6."""
        return self.Vn - self.Vs[..., None]

    @property
    def noise_step(self) -> np.ndarray:
        """One SignGD step of a noise inner product, ``eta ||xi_i||_1``, shape (R, n)."""
        return self.eta * self.xi_l1

    @property
    def signal_step(self) -> float:
        """One SignGD step of a signal inner product, ``eta ||mu||``."""
        return self.eta * self.mu_norm

    @property
    def key_drive(self) -> np.ndarray:
        """``s_i11 s_i12 Qs_s + s_i21 s_i22 Qn_si``, shape (T, R, m_k, n): the factor
        whose sign law 4 gives key noise (and, summed, law 6 the key signal)."""
        a = (self.s11 * self.s12)[:, :, None, :] * self.Qs[..., None]
        b = (self.s21 * self.s22)[:, :, None, :] * self.Qn
        return a + b

    def scores(self, k: int | slice = slice(None)) -> np.ndarray:
        """Attention scores ``z_lk = tau <q_l, k_k>`` (T, R, n, L, L) from section 9
        (disjoint supports): ``z_11 = tau sum_s Qs Ks``, ``z_12 = tau sum_s Qs Kn_si``,
        ``z_21 = tau sum_s Qn_si Ks``, ``z_22 = tau sum_s Qn_si Kn_si`` (and so on for
        more patches; clean labels, no feature noise). ``k`` selects records (an int
        keeps a length-1 T axis)."""
        sel = slice(k, k + 1) if isinstance(k, (int, np.integer)) and k != -1 else \
            (slice(-1, None) if k == -1 else k)
        Q, K, _ = self.patch_stack(sel)
        z = np.matmul(Q, np.swapaxes(K, -1, -2))
        return z * self.score_scale if self.score_scale != 1.0 else z


def recorded(history: History, name: str, default) -> np.ndarray:
    """``history[name]``, or ``default`` when the engine did not record it."""
    return history[name] if name in history else np.asarray(default)


def quantities(history: History) -> Quantities:
    """The section-4 quantities of every run recorded in ``history``."""
    S = history["softmax"]                                      # (T, R, n, L, L)
    y = history["y"]                                             # (R, n)
    # per-run arrays an engine may not record fall back to the theory's assumptions
    y_clean = recorded(history, "y_clean", y)
    position = recorded(history, "signal_position", np.zeros(y.shape, dtype=np.int64))
    shared = recorded(history, "shared_coordinates", np.zeros(history["xi_l1"].shape, dtype=np.int64))
    clean = (y == y_clean) & (position == 0)
    cfg = history.config
    return Quantities(
        step=np.asarray(history["step"]), Vs=history["Vs"], Vn=history["Vn"],
        Qs=history["Qs"], Ks=history["Ks"], Qn=history["Qn"], Kn=history["Kn"],
        s11=S[..., 0, 0], s12=S[..., 0, 1], s21=S[..., 1, 0], s22=S[..., 1, 1],
        lprime=history["lprime"], xi_l1=history["xi_l1"], clean=clean,
        shared=shared, eta=float(cfg.eta), mu_norm=float(cfg.mu_norm), S=S,
        batch=history["batch"] if "batch" in history else None,
        alpha=float(getattr(cfg, "feature_noise", 0.0)),
        score_scale=float(getattr(cfg, "score_scale", 1.0)))
