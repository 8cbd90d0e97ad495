"""Shared plumbing of the examples: command line, output folder, figure saving.

Each example is a script with ``main(argv) -> dict`` returning the numbers it prints,
so the test suite can run its ``--quick`` version and assert the claim it makes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:          # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


class OneLineParser(argparse.ArgumentParser):
    """Bad options get one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type: a bad value is one line naming the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


class _Parser(OneLineParser):
    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        out = Path(ns.out)
        if out.exists() and not out.is_dir():        # before any work, not after
            self.error(f"argument --out: {out} exists and is not a directory")
        return ns


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """The options every example takes: ``--out DIR`` (default
    ``examples/output/<name>``), ``--quick`` and ``--workers N`` (N >= 1)."""
    p = _Parser(prog=f"python examples/{name}.py", description=description)
    p.add_argument("--out", default=str(HERE / "output" / name),
                   help="folder for figures and tables (default: examples/output/%(prog)s)")
    p.add_argument("--quick", action="store_true",
                   help="a small, fast version (seconds; what the test suite runs)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="local processes (default: all cores)")
    return p


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save ``fig`` as PNG atomically, close it, and return the path."""
    from simulator.io import atomic_write_with

    path = Path(path)
    atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    pyplot().close(fig)
    return path
