"""Do the four stages and the paper's claims survive the modelling choices the paper
leaves open? (``docs/theory.md`` sections 1-2, 6-7.)

Each variant changes one choice of the built-in main job: the score scale
``tau = 1/sqrt(m_k)`` of standard transformers, mean pooling over query positions,
feature noise ``alpha = 0.2`` (the noise patch ``xi - alpha y mu``) and mini-batches of
4 of the 8 samples. For each, SignGD and Adam train the same data and initial state
(the reduced engine, exact for every variant; ``--engine full`` gives the same
numbers to about 1e-13), and the example prints the stage times ``T1 .. T4``, the
final training and test losses, the test margins, and Adam's distance from SignGD.

Run::

    python examples/variants.py            # 6000 steps, about 40 s on 2 cores
    python examples/variants.py --quick    # 3000 steps, SignGD only; about 10 s

A correct run prints one row per variant (the reduced engine's data-free start, so
the stage times differ from the full engine's default run). Measured (full run)::

    variant              T1   T2    T3    T4  train loss  test loss  train margin  test margin  Adam train  Adam test
    default              20   77   284  1389    7.77e-06     0.6789         14.14       0.0288    5.44e-03     0.6897
    tau = 1/sqrt(m_k)    20   77   284  2451    1.31e-05     0.6789         13.28       0.0288    5.53e-03     0.6898
    mean pooling         20   77   286  1389    1.96e-03     0.6860          7.07       0.0144    1.98e-02     0.6900
    feature noise 0.2    20   77   286  1390    7.84e-06     0.6818         14.13       0.0228    5.44e-03     0.6916
    mini-batch 4 of 8    40  160   868  2822    2.48e-03     0.6789          6.61       0.0288    1.07e-02     0.6885

What the numbers say: the four stages and the claims survive every variant.
``T1`` and ``T2`` follow from laws 1-4, which a score scale and pooling do not change
(signs only): they stay put. A score scale ``tau = 1/sqrt(m_k)`` shrinks the noise
patch's score gap by ``tau``, so the softmax collapse of Stage IV comes later (``T4``
1389 -> 2451). Mean pooling halves the output: the margins are halved (14.1 -> 7.1,
test 0.029 -> 0.014) and the loss falls more slowly, with the stages at the same
steps. With mini-batches of 4 of 8 each sample moves on about half the steps, so
every stage takes about twice as long (and Stage III, decided by votes over the
batch, three times). Feature noise ``alpha = 0.2`` leaves the dynamics of the
quantities almost as they were and lowers the test margin (0.029 -> 0.023). In every
variant the training loss converges while the test loss stays near ``log 2`` (claims
1 and 2), and Adam's losses stay close to SignGD's (claim 3). Figure:
``examples/output/variants/variants.png`` (the noise query's attention on the signal,
``s_{i,21}``, per variant, with ``T4`` marked).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

from _common import parser, pyplot, save_figure

from analysis import detect_stages, quantities
from simulator import SimulationConfig, run
from simulator.config import ConfigError

VARIANTS = {
    "default": {},
    "tau = 1/sqrt(m_k)": {"score_scale": 1 / math.sqrt(10)},
    "mean pooling": {"pooling": "mean"},
    "feature noise 0.2": {"feature_noise": 0.2},
    "mini-batch 4 of 8": {"batch_size": 4},
}
BASE = dict(engine="reduced", reduced_init="distribution", d=10**9, n_test=200)


def one(config: SimulationConfig) -> dict:
    """Stage times, losses and test margin of one run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = run(config)
    st = detect_stages(quantities(h))
    return {"T1": float(st.T1[0]), "T2": float(st.T2[0]), "T3": float(st.T3[0]),
            "T4": float(st.T4[0]), "train_loss": float(h["train_loss"][-1, 0]),
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
        results[name] = res

    print(f"{'variant':18s} {'T1':>4s} {'T2':>4s} {'T3':>5s} {'T4':>5s} {'train loss':>11s} "
          f"{'test loss':>10s} {'train margin':>13s} {'test margin':>12s}"
          + ("" if args.quick else f" {'Adam train':>11s} {'Adam test':>10s}"))
    for name, res in results.items():
        r = res["signgd"]
        fmt = lambda t: "never" if not math.isfinite(t) else f"{t:.0f}"   # noqa: E731
        print(f"{name:18s} {fmt(r['T1']):>4s} {fmt(r['T2']):>4s} {fmt(r['T3']):>5s} "
              f"{fmt(r['T4']):>5s} {r['train_loss']:>11.2e} {r['test_loss']:>10.4f} "
              f"{r['train_margin']:>13.2f} {r['test_margin']:>12.4f}"
              + ("" if args.quick else f" {res['adam']['train_loss']:>11.2e} "
                                        f"{res['adam']['test_loss']:>10.4f}"))
    print(f"({steps} steps, eta 5e-5, reduced engine; margins: median training margin and "
          "mean test margin at the end; Adam (0.9, 0.999): its final losses)")

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.9)
    styles = ("-", "--", (0, (1, 1.5)), "-.", (0, (5, 1, 1, 1, 1, 1)))   # curves that coincide stay visible
    widths = (4.5, 2.5, 2.5, 1.5, 2.0)
    for j, (name, res) in enumerate(results.items()):
        r = res["signgd"]
        ax.semilogy(r["step"], np.maximum(r["s21"], 1e-300), color=f"C{j}", lw=widths[j],
                    ls=styles[j], label=name.replace("tau = 1/sqrt(m_k)", r"$\tau = 1/\sqrt{m_k}$"))
        if math.isfinite(r["T4"]):
            ax.axvline(r["T4"], color=f"C{j}", ls=":", lw=1.5)
    ax.set_xlabel("step", fontsize=12)
    ax.set_ylabel(r"median $s_{i,21}$ (noise query on signal)", fontsize=12)
    ax.set_title(r"Stage IV under each variant (dotted: $T_4$)", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.legend(fontsize=11, loc="lower left")
    fig_path = save_figure(fig, f"{args.out}/variants.png")
    print(f"saved {fig_path}")
    return {"results": results, "figures": [str(fig_path)]}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as exc:
        sys.exit(f"python examples/variants.py: error: {exc}")
