"""Command line of the analysis: ``python -m analysis report RUN_DIR``,
``python -m analysis plot RUN_DIR``, ``python -m analysis animate RUN_DIR --out FILE.gif``,
``python -m analysis scaling SWEEP_DIR --x X --y Y`` (:mod:`analysis.scaling`) and
``python -m analysis sweep ...`` (delegated to :mod:`workflows.sweep`).

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
    plot = sub.add_parser("plot", help="write stages.png (patches.png for more than two "
                          "patches) and loss.png into RUN_DIR")
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--neuron", type=int, default=0, help="neuron shown in panels (a), (d)")
    plot.add_argument("--color-step", type=float, default=None, metavar="STEP",
                      help="step whose query-noise signs colour panels (a), (d) (default: T2)")
    sc = sub.add_parser(
        "scaling", help="fit log-log slopes of sweep results against one field and compare "
        "them with the theory's exponents",
        description="Per value of X: the seed mean, standard deviation and 95% interval of "
        "each Y; the log-log slope of the means with a 95% seed-bootstrap interval (seeds "
        "resampled at each X); the exponent the theory predicts (analysis.scaling.PREDICTED) "
        "and a verdict: agrees when it lies in the interval, disagrees when not, not "
        "applicable without a prediction. Writes scaling_X_Y.csv, scaling_X_Y_points.csv, "
        ".json, .png and .pdf. Refuses (exit 2) when X does not vary, Y was never reached, "
        "or fewer than 2 values of X keep enough seeds. Example: python -m analysis scaling "
        "sweeps/eta --x eta --y T2 --y T4 (docs/scaling.md)")
    sc.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep directory (with results.csv)")
    sc.add_argument("--x", required=True, metavar="FIELD", help="the config field that varies, e.g. eta")
    sc.add_argument("--y", required=True, action="append", metavar="COLUMN",
                    help="a per-run result column of results.csv, e.g. T1..T4, train_loss_rate, "
                         "final_test_loss, matched_test_loss (repeat for several)")
    sc.add_argument("--min-seeds", type=int, default=3, metavar="K",
                    help="values of X with fewer seeds that reached Y are left out of the fit (default 3)")
    sc.add_argument("--boot", type=int, default=2000, metavar="B", help="bootstrap resamples (default 2000)")
    sc.add_argument("--boot-seed", type=int, default=0, help="seed of the bootstrap generator (default 0)")
    sc.add_argument("--out", default=None, metavar="DIR", help="output directory (default SWEEP_DIR/scaling)")
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


def _scaling(args) -> int:
    try:
        from analysis.scaling import scaling_study, write_scaling
        study = scaling_study(args.sweep_dir, args.x, args.y, min_seeds=args.min_seeds,
                              n_boot=args.boot, seed=args.boot_seed)
    except ImportError as exc:                     # pandas: the `labelled` extra
        raise UsageError(f"{PROG} scaling: error: {exc}") from None
    except ValueError as exc:                      # ScalingError, a bad table
        raise UsageError(f"{PROG} scaling: error: {str(exc).splitlines()[0]}") from None
    from analysis.scaling import format_study
    print(format_study(study))
    paths = write_scaling(study, args.out or Path(args.sweep_dir) / "scaling")
    print(f"wrote {paths[0].parent}/: {', '.join(p.name for p in paths)}")
    return 0


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
            raise UsageError(f"{PROG}: error: choose a command: report, plot, animate, scaling or sweep")
        if args.command == "scaling":
            return _scaling(args)
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
        from analysis.report import add_files, figure_files, figure_names
        history = _load(args.run_dir)
        add_files(args.run_dir, history, figure_files(history, neuron=args.neuron,
                                                      color_step=args.color_step))
        first, *rest = figure_names(history)
        print(f"wrote {Path(args.run_dir) / first}, {', '.join(rest)}")
        return 0
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as exc:  # incl. ConfigError, RunDirError
        msg = str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. head
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
