"""Regenerate the figures of ``docs/stages.md`` from the default run.

    python docs/make_figures.py              # trains the default config (about 10 s)
    python docs/make_figures.py --run DIR    # or reuse a saved run directory

Writes ``docs/figures/stages.png``, ``loss.png`` and ``pairs.png`` and prints the
report table whose numbers the document quotes (default run, seed 0: T1 = 4,
T2 = 49, T3 = 213, T4 = 1131).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

from analysis.figures import _plt, save_loss_figure, save_stages_figure
from analysis.report import build_report, format_table
from analysis.summary import analyze
from simulator import History, SimulationConfig, train

FIGURES = Path(__file__).resolve().parent / "figures"


def save_pairs_figure(history: History, path: Path) -> None:
    """Two close-ups: (a) an at-risk pair oscillating with period 2 next to a pair that
    aligns, first steps; (b) a minority pair flipping in Stage IV, with its neuron's
    query signal."""
    plt = _plt()
    a = analyze(history)
    q, st = a.q, a.stages
    step = q.step
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)

    left = ax[0]
    early = step <= max(60, 1.2 * st.T2[0])
    stuck = np.argwhere(st.oscillating[0])
    safe = np.argwhere(~st.at_risk[0] & (st.pair_align_step[0] > st.T1[0]))
    shown = [(tuple(stuck[0]), "tab:purple", "at-risk pair (oscillates)")] if len(stuck) else []
    if len(safe):
        shown.append((tuple(safe[0]), "tab:gray", "ordinary pair (aligns)"))
    for (s, i), color, label in shown:
        left.plot(step[early], q.Qn[early, 0, s, i], color=color, lw=1.4,
                  label=f"{label}: query noise (s={s}, i={i})")
        left.plot(step[early], q.Kn[early, 0, s, i], color=color, lw=1.4, ls=":",
                  label="key noise")
    left.axhline(0, color="k", lw=0.6)
    left.axvline(st.T2[0], color="tab:green", lw=1, ls="--", label="T2")
    left.set(title="(a) Stage II close-up", xlabel="step")
    left.legend(fontsize=7.5, loc="best")

    right = ax[1]
    final = np.sign(q.Qs[-1, 0])[:, None]
    minority = np.argwhere((st.aligned_sign[0] != 0) & (st.aligned_sign[0] != final)
                           & (np.sign(q.Qn[-1, 0]) == final))
    if len(minority):
        s, i = minority[0]
        twin = right.twinx()
        twin.plot(step, q.Qs[:, 0, s], color="tab:orange", lw=1.2, ls="--")
        twin.set_ylabel(f"query signal of neuron {s} (dashed)", color="tab:orange")
        twin.spines["right"].set_visible(True)
        right.set_zorder(twin.get_zorder() + 1)       # noise lines above the signal line
        right.patch.set_visible(False)
        right.plot(step, q.Qn[:, 0, s, i], color="tab:blue", lw=1.8,
                   label=f"query noise (s={s}, i={i})")
        right.plot(step, q.Kn[:, 0, s, i], color="tab:red", lw=1.8, ls=":", label="key noise")
        right.axhline(0, color="gray", lw=0.6)
        right.axvline(st.T4[0], color="tab:brown", lw=1, ls="--", label="T4")
        right.legend(fontsize=7.5, loc="lower left")
    right.set(title="(b) Stage IV: a minority pair flips", xlabel="step")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", metavar="DIR", help="saved run directory (default: train)")
    args = parser.parse_args()
    history = History.load(args.run) if args.run else train(SimulationConfig()).history
    FIGURES.mkdir(parents=True, exist_ok=True)
    save_stages_figure(history, FIGURES / "stages.png")
    save_loss_figure(history, FIGURES / "loss.png")
    save_pairs_figure(history, FIGURES / "pairs.png")
    print(format_table(build_report(history)))
    print(f"wrote {FIGURES}/stages.png, loss.png, pairs.png")


if __name__ == "__main__":
    main()
