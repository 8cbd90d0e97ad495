"""A sweep's results as a typed table: :func:`load_sweep` reads ``SWEEP_DIR/results.csv``
into a pandas DataFrame.

A sweep directory (written by ``python -m analysis sweep``, :mod:`workflows.sweep`)
holds one CSV row per run: the point's identity (``point``, ``label``, ``optimizer``),
its config fields, the optimizer's hyper-parameters as it ran them (``beta1``,
``beta2``, ``eps``; NaN where it has none) and the run's summary
(:func:`analysis.summary.run_summary`: stage times, law counts, losses, ...).

Column types: config fields take their field's type (``int64``, ``float64``, or
pandas' ``string``); every other column is typed from its values: ``bool`` when every
cell is ``True``/``False``, ``int64`` when every cell is an integer, ``float64`` when
every cell is a number (``nan`` for a time that never happened, an empty cell for a
value a run does not have), else ``string`` (empty cells stay ``""``).

pandas comes with the optional extra ``labelled``
(``pip install 'signgd-transformer-sim[labelled]'``).

>>> table = load_sweep("sweeps/T2-eta")                          # doctest: +SKIP
>>> table.groupby("eta")["T2"].agg(["mean", "std", "count"])     # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from simulator import SimulationConfig

if TYPE_CHECKING:   # pragma: no cover
    import pandas

RESULTS_FILE = "results.csv"
"""The table of a sweep directory (one row per run)."""
IDENTITY_COLUMNS = ("point", "label", "optimizer")
INSTALL_HINT = "pip install 'signgd-transformer-sim[labelled]'"


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(f"sweep tables need pandas: {INSTALL_HINT}") from None
    return pandas


def config_column_types() -> dict[str, type]:
    """The value type of each config field (an optional field: that of its values)."""
    defaults = SimulationConfig().to_dict()
    return {name: (float if value is None else type(value)) for name, value in defaults.items()}


def results_path(sweep_dir: str | os.PathLike) -> Path:
    """``SWEEP_DIR/results.csv``, or ``FileNotFoundError`` (one line) if it is missing."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory")
    path = sweep_dir / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory: {RESULTS_FILE} is missing")
    return path


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _typed(pd, column, kind: type | None):
    """``column`` (strings) converted to ``kind``, or to the type its values imply."""
    values = list(column)
    if kind is None:
        if values and all(v in ("True", "False") for v in values):
            kind = bool
        elif values and all(_is_int(v) for v in values):
            kind = int
        elif values and all(v == "" or _is_number(v) for v in values) and any(v != "" for v in values):
            kind = float
        else:
            kind = str
    if kind is bool:
        return pd.Series([v == "True" for v in values], index=column.index, dtype=bool)
    if kind is int and all(_is_int(v) for v in values):
        return pd.Series([int(v) for v in values], index=column.index, dtype="int64")
    if kind in (int, float):
        return pd.Series([float(v) if v != "" else math.nan for v in values], index=column.index,
                         dtype="float64")
    return column.astype("string")


def load_sweep(sweep_dir: str | os.PathLike) -> "pandas.DataFrame":
    """The results table of a sweep directory, one row per run, with typed columns
    (module docstring). Raises ``FileNotFoundError`` (one line) for a directory
    without ``results.csv``."""
    pd = _pandas()
    path = results_path(sweep_dir)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:          # a sweep with no finished point
        return pd.DataFrame()
    kinds = config_column_types()
    out = {}
    for name in raw.columns:
        kind = str if name in IDENTITY_COLUMNS else kinds.get(name)
        out[name] = _typed(pd, raw[name], kind)
    return pd.DataFrame(out, columns=list(raw.columns), index=raw.index)
