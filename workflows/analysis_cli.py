"""Command line of the analysis: ``python -m analysis report RUN_DIR``,
``python -m analysis plot RUN_DIR``, ``python -m analysis animate RUN_DIR --out FILE.gif``
and ``python -m analysis sweep ...`` (delegated to :mod:`workflows.sweep`).

A thin layer over the library. Bad input exits with status 2 and a one-line error,
never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROG = "python -m analysis"


class UsageError(Exception):
    """Bad command-line input (one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Check a saved run against the SignGD theory.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    rep = sub.add_parser("report", help="print the prediction table; write report.md, "
                         "report.json and the figures into RUN_DIR")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    plot = sub.add_parser("plot", help="write stages.png and loss.png into RUN_DIR")
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--neuron", type=int, default=0, help="neuron shown in panels (a), (d)")
    plot.add_argument("--color-step", type=float, default=None, metavar="STEP",
                      help="step whose query-noise signs colour panels (a), (d) (default: T2)")
    sub.add_parser("sweep", help="run a parameter sweep (see: python -m analysis sweep --help)")
    anim = sub.add_parser("animate", help="write an animation of the run through the four "
                          "stages: GIF, or MP4 where ffmpeg is installed")
    anim.add_argument("run_dir", metavar="RUN_DIR")
    anim.add_argument("--out", metavar="FILE", default=None,
                      help="the animation, .gif or .mp4 (default: RUN_DIR/stages.gif)")
    anim.add_argument("--frames", type=int, default=80,
                      help="frames, spaced evenly on a log time axis (default: %(default)s)")
    anim.add_argument("--fps", type=float, default=8, help="frames per second (default: %(default)s)")
    anim.add_argument("--run", type=int, default=0, help="run of a batch to show (default: 0)")
    return parser


def _load(run_dir: str):
    from simulator import History

    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"{PROG}: error: RUN_DIR {run_dir!r} is not a directory")
    return History.load(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":
        from .sweep import main as sweep_main
        return sweep_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"{PROG}: error: choose a command: report, plot or sweep")
        if args.command == "report":
            _load(args.run_dir)  # validate before the heavier work
            from analysis.report import write_report
            print(write_report(args.run_dir))
            return 0
        if args.command == "animate":
            if not args.fps > 0:
                raise UsageError(f"{PROG}: error: --fps must be positive, got {args.fps:g}")
            from analysis.animation import animate
            history = _load(args.run_dir)
            out = Path(args.out) if args.out else Path(args.run_dir) / "stages.gif"
            frames = animate(history, out, frames=args.frames, fps=args.fps, run=args.run)
            print(f"wrote {out} ({frames} frames)")
            return 0
        from analysis.figures import save_loss_figure, save_stages_figure
        history = _load(args.run_dir)
        save_stages_figure(history, Path(args.run_dir) / "stages.png", neuron=args.neuron,
                           color_step=args.color_step)
        save_loss_figure(history, Path(args.run_dir) / "loss.png")
        print(f"wrote {Path(args.run_dir) / 'stages.png'}, loss.png")
        return 0
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (FileNotFoundError, KeyError, ValueError) as exc:  # incl. ConfigError
        msg = str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. head
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
