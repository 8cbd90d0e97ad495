"""The main job on the command line: ``python -m simulator run [--FIELD VALUE ...]``
(train, save the run directory, print the report) and ``python -m simulator bench``.

A thin layer over the library: every :class:`SimulationConfig` field is an option
named after it (``--sigma-p``, ``--mu-norm``, ``--m-k``, ...). Invalid input exits
with status 2 and a one-line error, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

from simulator.config import (ConfigError, SimulationConfig, allowed_range, choices, field_docs,
                              field_type, parse_integer)

class UsageError(Exception):
    """Bad command-line input (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump, long values cut
        message = re.sub(r"'([^'\n]{57})[^'\n]{4,}'", r"'\1...'", " ".join(message.split()))
        raise UsageError(f"{self.prog}: error: {message}")


def _int_option(text: str):
    return parse_integer(text)   # a 5,000-digit integer reaches the config, which names the field


_int_option.__name__ = "int"    # argparse names the type in "invalid int value"


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field, its help taken from the field's docstring and
    its allowed range from the config's validation rules."""
    group = parser.add_argument_group("config fields (default: the built-in main job)")
    defaults = SimulationConfig()
    docs = field_docs()
    for f in fields(SimulationConfig):
        kind, options = field_type(f.name), choices(f.name)
        doc = docs.get(f.name, "").replace("%", "%%")
        group.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
            type=_int_option if kind is int else kind, choices=options,
            metavar=None if options else kind.__name__.upper(),
            help=f"{doc} Allowed: {allowed_range(f.name)}. Default: {getattr(defaults, f.name)}.")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m simulator",
                     description="SignGD on a two-layer transformer (Li et al., 2024).")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = sub.add_parser("run", help="train one config (a batch of seeds) and save the run")
    run.add_argument("--config", metavar="FILE", help="start from a saved config.json")
    run.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name-of-config>)")
    run.add_argument("--no-report", action="store_true", help="skip the analysis report and figures")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    _add_config_options(run)
    bench = sub.add_parser("bench", help="per-step time and peak memory of the engines")
    bench.add_argument("--steps", type=int, default=1000)
    bench.add_argument("--torch", action="store_true", help="also time a PyTorch autograd peer (extra 'bench')")
    return parser


def config_from_args(args: argparse.Namespace) -> SimulationConfig:
    """The config given by ``--config FILE`` and the field options on top of it."""
    base = SimulationConfig.load(args.config) if args.config else SimulationConfig()
    changes = {f.name: getattr(args, f.name) for f in fields(SimulationConfig)
               if getattr(args, f.name) is not None}
    return base.replace(**changes)


def default_run_dir(config: SimulationConfig) -> Path:
    return Path("runs") / f"{config.engine}-{config.optimizer}-seed{config.seed}-{config.digest()}"


def _summary(history, seconds: float) -> str:
    cfg = history.config
    tl, te, err = history["train_loss"][-1], history["test_loss"][-1], history["test_error"][-1]
    shared = history["shared_coordinates"]
    under = history["underflow_step"] >= 0
    lines = [
        f"trained {cfg.n_seeds} run(s) x {cfg.steps} steps of {cfg.optimizer} "
        f"({cfg.engine} engine) in {seconds:.1f}s",
        f"  final train loss   {tl.mean():.3e}" + (f"  (runs: {tl.min():.3e} .. {tl.max():.3e})" if tl.size > 1 else ""),
        f"  final test loss    {te.mean():.4f}   (log 2 = 0.6931)",
        f"  final test error   {err.mean():.3f}",
        (f"  samples sharing noise coordinates: {int((shared > 0).sum())} of {shared.size}"
         if history.config.n_patches == 2 else
         f"  noise patches sharing coordinates: {int((shared > 0).sum())} of {shared.size}"),
        f"  samples whose l' underflowed to 0: {int(under.sum())} of {under.size}",
    ]
    return "\n".join(lines)


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` the run could not be written to (before any training)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {parent} is not writable")
    if out.is_dir() and any(out.iterdir()) and not any(
            (out / name).exists() for name in ("manifest.json", "config.json")):
        raise UsageError(f"--out {out}: a non-empty directory that is not a run directory; "
                         "choose another --out")


def command_run(args: argparse.Namespace) -> int:
    from simulator import run as run_config
    from simulator.plotting import training_figure_png

    config = config_from_args(args)
    out = Path(args.out) if args.out else default_run_dir(config)
    _check_out(out)                         # fail before training, not after
    start = time.perf_counter()
    history = run_config(config, progress=not args.quiet)
    seconds = time.perf_counter() - start
    # one figure of the run without the report; with it, stages.png and loss.png show
    # the same curves (and more), so the run directory holds no overlapping figures
    extra = {"training.png": training_figure_png(history)} if args.no_report else {}
    history.save(out, extra=extra)
    print(_summary(history, seconds))
    print(f"saved {out}/config.json, history.npz" + (", training.png" if args.no_report else ""))
    if not args.no_report:
        from analysis.report import write_report

        print(write_report(out, history))
    return 0


def command_bench(args: argparse.Namespace) -> int:
    from .benchmark import main as bench_main

    if not 10 <= args.steps <= 100_000:   # a 1-step run is subtracted from every timing
        raise UsageError(f"--steps must be an integer from 10 to 100000, got {args.steps}")
    return bench_main(steps=args.steps, with_torch=args.torch)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"python -m simulator: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _main(parser, argv)


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"{parser.prog}: error: choose a command: run or bench")
        if args.command == "run":
            return command_run(args)
        return command_bench(args)
    except (UsageError, ConfigError) as exc:
        msg = str(exc)
        print(msg if msg.startswith(parser.prog) else f"{parser.prog}: error: {msg}", file=sys.stderr)
        return 2
    except (FloatingPointError, ValueError) as exc:   # NonFiniteError: inputs beyond float64
        print(f"{parser.prog}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as exc:                             # cannot write the run
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
