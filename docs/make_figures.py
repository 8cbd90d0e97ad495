"""Regenerate the figures of ``docs/stages.md`` and the README from the default run.

    python docs/make_figures.py              # trains the default config (about 20 s in all)
    python docs/make_figures.py --run DIR    # or reuse a saved run directory

Writes into ``docs/figures/``: ``stages.png``, ``loss.png``, ``pairs.png`` and
``slide.png`` (:mod:`analysis.figures`), and ``animation_frame.png``, one frame of
``python -m analysis animate`` (:mod:`analysis.animation`), and prints the report table
whose numbers the document quotes (default run, seed 0: T1 = 4, T2 = 49, T3 = 213,
T4 = 1131).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

from analysis.animation import save_frame
from analysis.figures import (save_loss_figure, save_pairs_figure, save_slide_figure,
                              save_stages_figure)
from analysis.report import build_report, format_table
from simulator import History, SimulationConfig, train

FIGURES = Path(__file__).resolve().parent / "figures"
FRAME_STEP = 600
"""The animation frame shown in the README: Stage IV, ``s_{i,21}`` collapsing."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", metavar="DIR", help="saved run directory (default: train)")
    args = parser.parse_args()
    history = History.load(args.run) if args.run else train(SimulationConfig()).history
    FIGURES.mkdir(parents=True, exist_ok=True)
    save_stages_figure(history, FIGURES / "stages.png")
    save_loss_figure(history, FIGURES / "loss.png")
    save_pairs_figure(history, FIGURES / "pairs.png")
    save_slide_figure(history, FIGURES / "slide.png", dpi=100)
    save_frame(history, FIGURES / "animation_frame.png", step=FRAME_STEP, dpi=80)
    print(format_table(build_report(history)))
    print(f"wrote {FIGURES}/stages.png, loss.png, pairs.png, slide.png, animation_frame.png")


if __name__ == "__main__":
    main()
