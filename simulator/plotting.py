"""The run figure saved by ``python -m simulator run``: losses and the main inner
products of ``docs/theory.md`` section 4 (first run of the batch)."""

from __future__ import annotations

import numpy as np

from .history import History


def training_figure_png(history: History) -> bytes:
    """The PNG bytes of four panels: train/test loss; value signal and noise;
    query/key noise of a few pairs; softmax outputs ``s_{i,11}``, ``s_{i,21}`` (log scale)."""
    import io
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = history.steps
    cfg = history.config
    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.91, wspace=0.22, hspace=0.32)
    a = ax[0, 0]
    a.semilogy(t, history["train_loss"][:, 0], label="train loss")
    a.semilogy(t, history["test_loss"][:, 0], label="test loss")
    a.plot(t, history["test_error"][:, 0], label="test error", color="gray", ls="--")
    a.set(title="(a) loss", xlabel="step")
    a.legend()
    a = ax[0, 1]
    a.plot(t, history["Vn"][:, 0], color="tab:red", lw=0.8, alpha=0.6)
    a.plot([], [], color="tab:red", label=r"value noise $\langle \bar v, y_i\xi_i\rangle$")
    a.plot(t, history["Vs"][:, 0], color="tab:blue", lw=2, label=r"value signal $\langle \bar v, \mu\rangle$")
    a.set(title="(b) mean value signal and noise", xlabel="step")
    a.legend()
    a = ax[1, 0]
    Qn, Kn = history["Qn"][:, 0], history["Kn"][:, 0]          # (T, m_k, n)
    pairs = [(s, i) for s in range(min(cfg.m_k, 2)) for i in range(min(cfg.n, 4))]
    for j, (s, i) in enumerate(pairs):
        c = f"C{j % 10}"
        a.plot(t, Qn[:, s, i], color=c, lw=1)
        a.plot(t, Kn[:, s, i], color=c, lw=1, ls=":")
    a.plot([], [], color="k", label=r"query noise $\langle w_{Q,s}, y_i\xi_i\rangle$")
    a.plot([], [], color="k", ls=":", label=r"key noise $\langle w_{K,s}, y_i\xi_i\rangle$")
    a.axhline(0, color="gray", lw=0.5)
    a.set(title="(c) query/key noise, a few (s, i) pairs", xlabel="step")
    a.legend()
    a = ax[1, 1]
    S = history["softmax"][:, 0]                               # (T, n, 2, 2)
    tiny = np.finfo(float).tiny
    a.semilogy(t, np.maximum(S[:, :, 1, 0], tiny), color="tab:purple", lw=0.8, alpha=0.6)
    a.semilogy(t, np.maximum(S[:, :, 0, 0], tiny), color="tab:green", lw=0.8, alpha=0.6)
    a.plot([], [], color="tab:purple", label=r"$s_{i,21}$ (noise query on signal)")
    a.plot([], [], color="tab:green", label=r"$s_{i,11}$ (signal query on signal)")
    a.set(title="(d) softmax outputs", xlabel="step")
    a.legend()
    fig.suptitle(rf"{cfg.optimizer}: $d$={cfg.d}, $n$={cfg.n}, $s$={cfg.s}, $\sigma_p$={cfg.sigma_p:g}, "
                 rf"$\|\mu\|$={cfg.mu_norm:g}, $\sigma_0$={cfg.sigma_0:g}, $\eta$={cfg.eta:g}, seed {cfg.seed}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
