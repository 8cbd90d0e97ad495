"""Do the four stages and the paper's claims survive the modelling choices the paper
leaves open? (``docs/theory.md`` sections 1-2, 6-7.)

Each variant changes one choice of the built-in main job: the score scale
``tau = 1/sqrt(m_k)`` of standard transformers, mean pooling over query positions,
feature noise ``alpha = 0.2`` (the noise patch ``xi - alpha y mu``), mini-batches of
4 of the 8 samples, and inputs of 3 and 4 patches (2 and 3 noise patches). For each, SignGD and Adam train the same data and initial state
(the reduced engine, exact for every variant; ``--engine full`` gives the same
numbers to about 1e-13), and the example prints the stage times ``T1 .. T4``, the
final training and test losses, the test margins, Adam's distance from SignGD, and
SignGD against GD at a point of claim 4.

Run::

    python examples/variants.py            # 6000 steps, about 40 s on 2 cores
    python examples/variants.py --quick    # 3000 steps, no Adam; about 15 s

A correct run prints one row per variant (the reduced engine's data-free start, so
the stage times differ from the full engine's default run). Measured (full run)::

    variant              T1   T2    T3    T4  train loss  test loss  train margin  test margin  Adam train  Adam test  SignGD|GD matched
    default              20   77   284  1389    7.77e-06     0.6789         14.14       0.0288    5.44e-03     0.6897     0.540|0.131
    tau = 1/sqrt(m_k)    20   77   284  2451    1.31e-05     0.6789         13.28       0.0288    5.53e-03     0.6898     0.515|0.131
    mean pooling         20   77   286  1389    1.96e-03     0.6860          7.07       0.0144    1.98e-02     0.6900     0.577|0.133
    feature noise 0.2    20   77   286  1390    7.84e-06     0.6818         14.13       0.0228    5.44e-03     0.6916     0.609|0.144
    mini-batch 4 of 8    40  160   868  2822    2.48e-03     0.6789          6.61       0.0288    1.07e-02     0.6885     0.473|0.130
    3 patches             5  n/a   n/a   n/a    2.41e-11     0.6785         30.13       0.0296    1.07e-03     0.6919     0.588|0.167
    4 patches            17  n/a   n/a   n/a    2.82e-15     0.6778         42.47       0.0309    4.33e-04     0.6918     0.627|0.212

What the numbers say: the four stages and the claims survive every variant.
``T1`` and ``T2`` follow from laws 1-4, which a score scale and pooling do not change
(signs only): they stay put. A score scale ``tau = 1/sqrt(m_k)`` shrinks the noise
patch's score gap by ``tau``, so the softmax collapse of Stage IV comes later (``T4``
1389 -> 2451). Mean pooling halves the output: the margins are halved (14.1 -> 7.1,
test 0.029 -> 0.014) and the loss falls more slowly, with the stages at the same
steps. With mini-batches of 4 of 8 each sample moves on about half the steps, so
every stage takes about twice as long (and Stage III, decided by votes over the
batch, three times). Feature noise ``alpha = 0.2`` leaves the dynamics of the
quantities almost as they were and lowers the test margin (0.029 -> 0.023). With
``L`` patches every noise patch has its own laws (``tests/test_laws_exact.py``): each
patch's value noise grows at ``2 eta ||xi_ij||_1`` a step and every noise query ends up
on its own key, so the training margin grows about ``L - 1`` times as fast (14.1 ->
30.1 -> 42.5) and the training loss falls much faster; the test loss stays near
``log 2``. The stage detection is written for one noise patch, so ``T2 .. T4`` are
``n/a`` there (``T1``, every value noise above the value signal, is read directly;
it differs because the data-free start draws other noise for more patches). In every
variant the training loss converges while the test loss stays near ``log 2`` (claims
1 and 2), Adam's losses stay close to SignGD's (claim 3), and at a point between the
two lines of claim 4 (``||mu|| = 3.2, s = 16``: GD's line is at 1.4, the sign methods'
at 12.8) GD generalizes and SignGD does not, compared at the same training loss 0.1
(matched test loss 0.13-0.21 against 0.47-0.63; ``examples/gd_vs_signgd.py`` draws
the whole phase diagram). Figure:
``examples/output/variants/variants.png`` (the first noise query's attention on the
signal, ``s_{i,21}``, per variant, with ``T4`` marked).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

from _common import parser, pyplot, save_figure
from gd_vs_signgd import GENERALIZES, TARGET as MATCH, learning_rate

from analysis import detect_stages, quantities
from simulator import SimulationConfig, run
from simulator.config import ConfigError

VARIANTS = {
    "default": {},
    "tau = 1/sqrt(m_k)": {"score_scale": 1 / math.sqrt(10)},
    "mean pooling": {"pooling": "mean"},
    "feature noise 0.2": {"feature_noise": 0.2},
    "mini-batch 4 of 8": {"batch_size": 4},
    "3 patches": {"n_patches": 3},
    "4 patches": {"n_patches": 4},
}
BASE = dict(engine="reduced", reduced_init="distribution", d=10**9, n_test=200)

#: Claim 4 (sign methods need cleaner data than GD): a point between the two lines of
#: ``examples/gd_vs_signgd.py``, ``sigma_p sqrt(s / n) = 1.4 < ||mu|| = 3.2 <
#: s sigma_p sqrt(2 / pi) = 12.8``, where GD generalizes and SignGD does not; the two
#: are compared at the same training loss (MATCH, the target of that example; a
#: matched test loss below GENERALIZES: the run generalizes), every 2nd step recorded,
#: with that example's learning rates (n = 8, m_v = 10 there and here).
CLAIM4 = dict(BASE, s=16, mu_norm=3.2, n_test=500, steps=800, record_every=2)


def matched_test_loss(config: SimulationConfig) -> float:
    """The test loss at the first record whose training loss is at most MATCH."""
    config = config.replace(eta=learning_rate(config.optimizer, config.mu_norm, config.s,
                                              config.n_patches - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = run(config)
    reached = np.flatnonzero(h["train_loss"][:, 0] <= MATCH)
    return float(h["test_loss"][reached[0], 0]) if reached.size else math.nan


def one(config: SimulationConfig) -> dict:
    """Stage times, losses and test margin of one run. With more than two patches the
    stage detection does not apply (``analysis.claims.patches_reason``): ``T2 .. T4`` are
    None, and ``T1`` is read off directly, the first step at which every noise patch's
    value noise exceeds the value signal (laws 1-2 hold per noise patch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = run(config)
    if config.n_patches == 2:
        st = detect_stages(quantities(h))
        times = {k: float(getattr(st, k)[0]) for k in ("T1", "T2", "T3", "T4")}
    else:
        over = (h["Vn"][:, 0] > h["Vs"][:, 0, None]).all(-1)
        times = {"T1": float(h.steps[np.argmax(over)]) if over.any() else math.nan,
                 "T2": None, "T3": None, "T4": None}
    return {**times, "train_loss": float(h["train_loss"][-1, 0]),
            "test_loss": float(h["test_loss"][-1, 0]),
            "test_loss_start": float(h["test_loss"][0, 0]),
            "test_margin": float(h["test_margin_mean"][-1, 0]),
            "train_margin": float(np.median(h["margin"][-1, 0])),
            "s21": np.median(h["softmax"][:, 0, :, 1, 0], axis=-1), "step": h.steps}


def main(argv: list[str] | None = None) -> dict:
    p = parser("variants", "The four stages and the claims under each modelling variant.")
    args = p.parse_args(argv)
    steps = 3000 if args.quick else 6000
    base = SimulationConfig(**BASE, steps=steps)
    results = {}
    for name, change in VARIANTS.items():
        cfg = base.replace(**change)
        res = {"signgd": one(cfg)}
        if not args.quick:
            res["adam"] = one(cfg.replace(optimizer="adam"))
        point = SimulationConfig(**CLAIM4).replace(**change)
        res["claim4"] = {opt: matched_test_loss(point.replace(optimizer=opt)) for opt in ("signgd", "gd")}
        results[name] = res

    print(f"{'variant':18s} {'T1':>4s} {'T2':>4s} {'T3':>5s} {'T4':>5s} {'train loss':>11s} "
          f"{'test loss':>10s} {'train margin':>13s} {'test margin':>12s}"
          + ("" if args.quick else f" {'Adam train':>11s} {'Adam test':>10s}")
          + f" {'SignGD|GD matched':>18s}")
    for name, res in results.items():
        r = res["signgd"]
        fmt = lambda t: "n/a" if t is None else "never" if not math.isfinite(t) else f"{t:.0f}"   # noqa: E731
        print(f"{name:18s} {fmt(r['T1']):>4s} {fmt(r['T2']):>4s} {fmt(r['T3']):>5s} "
              f"{fmt(r['T4']):>5s} {r['train_loss']:>11.2e} {r['test_loss']:>10.4f} "
              f"{r['train_margin']:>13.2f} {r['test_margin']:>12.4f}"
              + ("" if args.quick else f" {res['adam']['train_loss']:>11.2e} "
                                        f"{res['adam']['test_loss']:>10.4f}")
              + f" {res['claim4']['signgd']:>9.3f}|{res['claim4']['gd']:.3f}")
    print(f"({steps} steps, eta 5e-5, reduced engine; margins: median training margin and "
          "mean test margin at the end; Adam (0.9, 0.999): its final losses; n/a: the stage "
          "detection is for two patches; SignGD|GD matched: test losses at training loss "
          f"{MATCH:g}, ||mu|| = 3.2, s = 16, between the two lines of claim 4; below "
          f"{GENERALIZES:.3f} generalizes)")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.9)
    styles = ("-", "--", (0, (1, 1.5)), "-.", (0, (5, 1, 1, 1, 1, 1)), "-", "--")   # coinciding curves stay visible
    widths = (4.5, 2.5, 2.5, 1.5, 2.0, 1.5, 1.5)
    for j, (name, res) in enumerate(results.items()):
        r = res["signgd"]
        ax.semilogy(r["step"], np.maximum(r["s21"], 1e-300), color=f"C{j}", lw=widths[j],
                    ls=styles[j], label=name.replace("tau = 1/sqrt(m_k)", r"$\tau = 1/\sqrt{m_k}$"))
        if r["T4"] is not None and math.isfinite(r["T4"]):
            ax.axvline(r["T4"], color=f"C{j}", ls=":", lw=1.5)
    ax.set_xlabel("step", fontsize=12)
    ax.set_ylabel(r"median $s_{i,21}$ (first noise query on signal)", fontsize=12)
    ax.set_title(r"Stage IV under each variant (dotted: $T_4$)", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.legend(fontsize=11, loc="lower left", ncol=2)
    fig_path = save_figure(fig, f"{args.out}/variants.png")
    print(f"saved {fig_path}")
    return {"results": results, "figures": [str(fig_path)]}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as exc:
        sys.exit(f"python examples/variants.py: error: {exc}")
