"""Parameter sweeps: every (config point, optimizer) of a grid, over seeds, in one tidy table.

A *point* is one full :class:`~simulator.SimulationConfig`: the base config with some
fields set from the grid, an optimizer (with optional per-optimizer overrides) and
``n_seeds = seeds``. The seeds of a point have the same shape, so they run as one
vectorized batch through :func:`simulator.run`. Each run of the batch becomes one
row of the table.

Command line (``python -m analysis sweep``)::

    python -m analysis sweep --base base.json --grid mu_norm=0.01,0.1,1 \\
        --grid sigma_p=0.5,1 --seeds 4 --optimizers signgd,adam,gd:eta=0.1 \\
        [--derive FIELD=EXPRESSION ...] --out sweeps/x \\
        [--workers N | --scheduler ADDRESS] [--save-runs]

* ``--grid FIELD=V1,V2,...`` (repeatable): the Cartesian product over all ``--grid``
  options. ``--grid-file FILE``: a JSON object ``{"field": [values]}`` (a product
  too) or a JSON list of objects (an explicit list of points); combined with
  ``--grid`` it is crossed with it.
* ``--optimizers signgd,adam,gd:eta=0.1``: each entry is an optimizer name with
  optional ``:field=value`` overrides that apply to it alone (GD needs a far larger
  ``eta`` than the sign methods). The entry is the row's ``label``.
* ``--derive FIELD=EXPRESSION`` (repeatable): a field computed per point from the
  others, after the grid values and the optimizer's overrides are applied, in the
  order given (a later expression sees the earlier results), then validated by the
  config. Examples::

      --derive steps=0.2/eta                    # same eta * steps at every eta
      --derive record_every=max(1,steps//2000)  # about 2000 records per run
      --derive n_test=10*n                      # held-out set grows with n
      --derive sigma_0=0.005*sqrt(20/s)         # keep sigma_0 sqrt(s) fixed

  An expression has numbers, the numeric config fields, ``+ - * / // ** %``, unary
  minus and ``min, max, round, int, float, sqrt, log, exp, ceil, floor``; nothing else
  (no attribute access, no other calls; :mod:`workflows.expressions` parses it with
  :mod:`ast`, never ``eval``). An integer field takes the nearest integer of the
  result (write ``floor(...)`` or ``ceil(...)`` to choose the direction). A bad
  expression, or a value the config refuses, is one line naming the expression, the
  field and the point.
* ``--match-train-loss TARGET`` adds the columns ``matched_step``,
  ``matched_train_loss``, ``matched_test_loss``, ``matched_test_error``: the first
  recorded step where the training loss is ``<= TARGET`` (NaN if never), so
  optimizers can be compared at the same training loss.

Output directory::

    out/results.csv         one row per run (rebuilt from points/ at the end, and
                            after an interruption)
    out/points/<key>.json   the rows of one finished point, written atomically
    out/runs/<key>/         config.json + history.npz of the point (--save-runs)

``<key>`` is a hash of the point's full config (and of ``--match-train-loss``). A
rerun of the same command skips every point whose file exists, so an interruption
loses at most the points in flight and nothing is computed twice.

Executors: ``--workers 1`` runs the points in this process; the default is a local
process pool with one worker per core; ``--scheduler ADDRESS`` sends the points to
the workers of a ``dask.distributed`` cluster (optional extra ``dask``; the workers
need this project installed). Workers only compute; this process writes every file.
The numbers do not depend on the executor (tests check serial, pool and Dask give
identical tables); only ``point_seconds``, the wall time of a point, does.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from analysis.tables import RESULTS_FILE
from simulator.config import ConfigError, SimulationConfig, field_type
from simulator.io import atomic_write_text, remove_stale_temporaries
from simulator.optimizers import hyper_parameters

from .expressions import Expression, ExpressionError

POINTS_DIR = "points"
RUNS_DIR = "runs"
NOT_IN_GRID = ("n_seeds",)     # set by --seeds
FIELD_TYPES = {f.name: field_type(f.name) for f in fields(SimulationConfig)}
TIMING_COLUMNS = ("point_seconds",)
"""Columns that depend on the machine, not on the config (excluded from comparisons)."""


class SweepError(ValueError):
    """Bad sweep input: the message is one line naming the field or value."""


# ---------------------------------------------------------------------------
# grid specification
# ---------------------------------------------------------------------------

def parse_value(name: str, text: str, where: str = "--grid") -> Any:
    """``text`` converted to the type of config field ``name``."""
    if name not in FIELD_TYPES:
        raise SweepError(f"{where}: unknown config field {name!r}")
    kind = FIELD_TYPES[name]
    text = text.strip()
    try:
        if kind is int:
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
    except ValueError:
        raise SweepError(f"{where} {name}: {text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not text:
        raise SweepError(f"{where} {name}: empty value")
    return text


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """``"mu_norm=0.01,0.1,1"`` -> ``("mu_norm", [0.01, 0.1, 1.0])``."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise SweepError(f"--grid {text!r}: expected FIELD=V1,V2,...")
    return name, [parse_value(name, v) for v in values.split(",")]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and the fields set for it alone; ``label`` is how rows name it."""

    label: str
    name: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "OptimizerSpec":
        """``"gd:eta=0.1:steps=500"`` -> name ``gd`` with two overrides."""
        name, *parts = [p.strip() for p in text.strip().split(":")]
        overrides = []
        for part in parts:
            key, sep, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise SweepError(f"--optimizers {text!r}: expected NAME[:FIELD=VALUE...]")
            if key in NOT_IN_GRID + ("optimizer",):
                raise SweepError(f"--optimizers {text!r}: {key} cannot be set per optimizer")
            overrides.append((key, parse_value(key, value, where="--optimizers")))
        return cls(text.strip(), name, tuple(overrides))


@dataclass(frozen=True)
class Derived:
    """A config field computed per point from the others (``--derive FIELD=EXPRESSION``)."""

    name: str
    expression: Expression

    @classmethod
    def parse(cls, text: str) -> "Derived":
        """``"steps=0.2/eta"`` -> field ``steps`` with the checked expression ``0.2/eta``."""
        name, sep, body = str(text).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not body.strip():
            raise SweepError(f"--derive {text!r}: expected FIELD=EXPRESSION, e.g. steps=0.2/eta")
        where = f"--derive {name}={body.strip()}"
        if name not in FIELD_TYPES:
            raise SweepError(f"{where}: unknown config field {name!r}")
        if name in NOT_IN_GRID + ("optimizer",):
            raise SweepError(f"{where}: {name} is set by --{'seeds' if name == 'n_seeds' else 'optimizers'}, "
                             "not derived")
        if FIELD_TYPES[name] is str:
            raise SweepError(f"{where}: {name} is not a number field")
        try:
            expression = Expression.parse(body)
        except ExpressionError as exc:
            raise SweepError(f"{where}: {exc}") from None
        for used in expression.names:
            if used not in FIELD_TYPES:
                raise SweepError(f"{where}: unknown name {used!r} (not a config field)")
            if FIELD_TYPES[used] is str:
                raise SweepError(f"{where}: {used} is not a number field")
        return cls(name, expression)

    @property
    def label(self) -> str:
        return f"--derive {self.name}={self.expression}"

    def value(self, values: dict[str, Any]) -> int | float:
        """The field's value from the point's ``values``, typed after the field."""
        result = self.expression.evaluate(values)       # ExpressionError: one line
        if FIELD_TYPES[self.name] is int:
            return result if isinstance(result, int) else int(round(result))
        try:
            return float(result)
        except OverflowError:
            raise ExpressionError(f"the result (an integer of {len(str(result))} digits) "
                                  "is too large for a float") from None


def _derive(derived: Sequence[Derived], base: SimulationConfig, changes: dict[str, Any],
            shown: str) -> dict[str, Any]:
    """The derived fields' values of one point, in order (each sees the earlier ones)."""
    values = {**base.to_dict(), **changes}
    out = {}
    for d in derived:
        try:
            out[d.name] = values[d.name] = d.value(values)
        except ExpressionError as exc:
            raise SweepError(f"{d.label}: {exc} at {shown}") from None
    return out


def _value(v: Any) -> str:
    """A grid value for a message, long ones cut (a 309-digit integer, say)."""
    text = repr(v)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _shown(entry: dict[str, Any], spec: "OptimizerSpec | None") -> str:
    items = [f"{k}={_value(v)}" for k, v in entry.items()]
    if spec is not None:
        items.insert(0, spec.label)
    return f"point ({', '.join(items)})" if items else "the base config"


@dataclass(frozen=True)
class Point:
    """One config of the sweep (its seeds run as one batch)."""

    key: str
    label: str
    config: SimulationConfig
    grid_values: tuple[tuple[str, Any], ...]
    derived: tuple[tuple[str, Any], ...] = ()
    """The values of the ``--derive`` fields at this point."""


def point_key(config: SimulationConfig, match_train_loss: float | None) -> str:
    """Hash of everything that decides a point's rows."""
    # the fields that differ from the defaults: a field added at its default keeps every key
    payload = json.dumps({"config": config.changes(), "match_train_loss": match_train_loss},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _grid_entries(grid: dict[str, Sequence[Any]] | Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if grid is None:
        return [{}]
    if isinstance(grid, dict):
        names = list(grid)
        for name in names:
            if not isinstance(grid[name], (list, tuple)) or not grid[name]:
                raise SweepError(f"grid field {name!r} needs a non-empty list of values")
        return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]
    entries = list(grid)
    for entry in entries:
        if not isinstance(entry, dict):
            raise SweepError(f"a grid list holds objects of field: value; got {entry!r}")
    return [dict(e) for e in entries]


def expand(base: SimulationConfig, grids: Iterable[Any] = (), *, seeds: int | None = None,
           optimizers: Sequence[str | OptimizerSpec] | None = None,
           match_train_loss: float | None = None,
           derive: Sequence[str | Derived] = ()) -> list[Point]:
    """Every point of the sweep, in order (grid entries outer, optimizers inner).

    Parameters
    ----------
    base : SimulationConfig
        Fields the grid does not set.
    grids : iterable of (dict of field -> list of values) or (list of dicts)
        Each is a product (dict) or an explicit list; several are crossed.
    seeds : int, optional
        Runs per point (``n_seeds``); default: the base config's.
    optimizers : list of str or OptimizerSpec, optional
        Default: the base config's optimizer (or an ``optimizer`` grid field).
    derive : list of str or Derived, optional
        ``"FIELD=EXPRESSION"`` entries, evaluated per point after the grid values and
        the optimizer's overrides, in order; e.g. ``["steps=0.2/eta",
        "record_every=max(1,steps//2000)"]``.

    Raises
    ------
    SweepError
        One line naming the field (and, for a derived field, its expression and the
        point) of any bad input.
    """
    if isinstance(grids, dict):      # a single product given bare
        grids = [grids]
    entries = [{}]
    for grid in grids:
        entries = [{**a, **b} for a in entries for b in _grid_entries(grid)]
    specs = [o if isinstance(o, OptimizerSpec) else OptimizerSpec.parse(o) for o in (optimizers or [])]
    for entry in entries:
        for name in entry:
            if name not in FIELD_TYPES:
                raise SweepError(f"grid: unknown config field {name!r}")
            if name in NOT_IN_GRID:
                raise SweepError(f"grid: {name} is set by --seeds, not by the grid")
            if name == "optimizer" and specs:
                raise SweepError("grid: optimizer is set by --optimizers; give one or the other")
    for spec in specs:
        for name, _ in spec.overrides:
            if name not in FIELD_TYPES:
                raise SweepError(f"--optimizers {spec.label!r}: unknown config field {name!r}")
    derived = [d if isinstance(d, Derived) else Derived.parse(d) for d in derive]
    seen_derived: set[str] = set()
    for d in derived:
        if d.name in seen_derived:
            raise SweepError(f"{d.label}: {d.name} is derived twice")
        seen_derived.add(d.name)
        if any(d.name in entry for entry in entries):
            raise SweepError(f"{d.label}: {d.name} is also set by the grid; give one or the other")
        for spec in specs:
            if d.name in dict(spec.overrides):
                raise SweepError(f"{d.label}: {d.name} is also set by --optimizers {spec.label}; "
                                 "give one or the other")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise SweepError(f"seeds must be an integer >= 1, got {seeds!r}")
    if match_train_loss is not None and not (match_train_loss > 0 and math.isfinite(match_train_loss)):
        raise SweepError(f"match_train_loss must be a positive number, got {match_train_loss!r}")
    points, seen = [], set()
    for entry in entries:
        for spec in specs or [None]:
            changes = dict(entry)
            if spec is not None:
                changes["optimizer"] = spec.name
                changes.update(spec.overrides)
            if seeds is not None:
                changes["n_seeds"] = seeds
            values = _derive(derived, base, changes, _shown(entry, spec)) if derived else {}
            try:
                config = base.replace(**changes, **values)
            except (ConfigError, TypeError) as exc:
                culprit = next((d for d in derived if str(exc).startswith(f"{d.name} ")), None)
                if culprit is not None:
                    raise SweepError(f"{culprit.label}: {exc} at {_shown(entry, spec)}") from None
                shown = ", ".join(f"{k}={_value(v)}" for k, v in {**changes, **values}.items()
                                  if k != "n_seeds")
                raise SweepError(f"point ({shown}): {exc}") from None
            key = point_key(config, match_train_loss)
            if key in seen:      # the same config twice: run it once
                continue
            seen.add(key)
            label = spec.label if spec is not None else config.optimizer
            points.append(Point(key, label, config, tuple(entry.items()), tuple(values.items())))
    return points


# ---------------------------------------------------------------------------
# one point (runs on a worker)
# ---------------------------------------------------------------------------

def matched_metrics(history, target: float) -> list[dict[str, float]]:
    """Per run, the metrics at the first recorded step with train loss ``<= target``."""
    import numpy as np

    train = history["train_loss"]                      # (T, R)
    out = []
    for r in range(train.shape[1]):
        hit = np.flatnonzero(train[:, r] <= target)
        if hit.size == 0:
            out.append({"matched_step": math.nan, "matched_train_loss": math.nan,
                        "matched_test_loss": math.nan, "matched_test_error": math.nan})
            continue
        k = int(hit[0])
        out.append({"matched_step": int(history.steps[k]),
                    "matched_train_loss": float(train[k, r]),
                    "matched_test_loss": float(history["test_loss"][k, r]),
                    "matched_test_error": float(history["test_error"][k, r])})
    return out


def compute_point(config_json: str, match_train_loss: float | None = None,
                  keep_history: bool = False) -> dict[str, Any]:
    """Run one point and return ``{"summaries", "seconds", "history"}``.

    Pure apart from timing: the same config gives the same summaries on any worker.
    """
    from analysis.summary import run_summary   # noqa: PLC0415 (the analysis layer, lazily)
    from simulator import run

    config = SimulationConfig.from_json(config_json)
    start = time.perf_counter()
    history = run(config)
    seconds = time.perf_counter() - start
    summaries = [dict(s) for s in run_summary(history)]
    if match_train_loss is not None:
        for summary, extra in zip(summaries, matched_metrics(history, match_train_loss)):
            summary.update(extra)
    return {"summaries": summaries, "seconds": seconds,
            "history": history if keep_history else None}


def point_rows(point: Point, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The table rows of a finished point: identity, config fields, run summary."""
    config_fields = {k: v for k, v in point.config.to_dict().items() if k not in ("seed",)}
    # optimizer hyper-parameters as the optimizer ran them; NaN where it has none
    hyper = hyper_parameters(point.config)
    for name in ("beta1", "beta2", "eps"):
        config_fields[name] = hyper.get(name, math.nan)
    config_fields["batch_size"] = point.config.batch_size or point.config.n   # as run
    rows = []
    for summary in result["summaries"]:
        row = {"point": point.key, "label": point.label, "optimizer": point.config.optimizer}
        row.update(config_fields)
        # the run's summary (it includes the run's own seed); the config's own fields
        # win where the summary repeats one (after a failed analysis it holds NaN)
        row.update({k: v for k, v in summary.items() if k not in row or k == "seed"})
        row["point_seconds"] = result["seconds"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# the sweep: skip finished points, run the rest, write files
# ---------------------------------------------------------------------------

@dataclass
class SweepResult:
    """What a sweep did: the table rows in point order and which points ran."""

    out: Path
    rows: list[dict[str, Any]]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False
    terminated: bool = False


def points_file(out: Path, key: str) -> Path:
    return out / POINTS_DIR / f"{key}.json"


def is_done(out: Path, point: Point, save_runs: bool) -> bool:
    """Whether ``point`` has a valid finished file (and run directory with
    ``save_runs``). A damaged point file (empty, truncated, not this point's) is
    removed with a warning, so the point is computed again."""
    path = points_file(out, point.key)
    if not path.is_file():
        return False
    try:
        read_point_rows(out, point.key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"sweep: point file {path} is damaged ({exc}); computing the point again",
                      stacklevel=2)
        path.unlink(missing_ok=True)
        return False
    return not save_runs or (out / RUNS_DIR / point.key / "history.npz").is_file()


def read_point_rows(out: Path, key: str) -> list[dict[str, Any]]:
    """The rows of a finished point, checked: a JSON object of this point's key whose
    rows are a list of objects (``ValueError`` otherwise)."""
    with open(points_file(out, key), encoding="utf-8") as fh:
        data = json.load(fh)
    if (not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("rows"), list)
            or not all(isinstance(row, dict) for row in data["rows"])):
        raise ValueError("not a finished point of this sweep")
    return data["rows"]


def check_out(out: Path) -> None:
    """Refuse a sweep directory that cannot be one, before any work."""
    for path in (out, out / POINTS_DIR, out / RUNS_DIR):
        if path.exists() and not path.is_dir():
            raise SweepError(f"--out {out}: {path} exists and is not a directory")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SweepError(f"--out {out}: {parent} is not writable")


def check_scheduler(address: str) -> None:
    """Refuse a scheduler address that is not ``[tcp|tls|inproc|ucx]://HOST:PORT``."""
    import re

    if not re.fullmatch(r"(tcp|tls|ucx|inproc)://[^\s/:]+(:\d{1,5})?/?", address):
        raise SweepError(f"--scheduler {address!r}: expected an address like tcp://HOST:PORT")


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serializable: {value!r}")


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """The tidy CSV (columns in first-seen order; floats as shortest round-trip repr)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


#: Columns that are text even when they look like numbers (a point's hash, its label).
TEXT_COLUMNS = ("point", "label")


def read_table(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a results CSV with numbers parsed back (``repr`` round-trips exactly)."""
    def convert(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return {"True": True, "False": False}.get(text, text)

    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: v if k in TEXT_COLUMNS else convert(v) for k, v in row.items()}
                for row in csv.DictReader(fh)]


class _Executor:
    """Submit ``compute_point`` calls; yield ``(key, result or exception)`` as they finish."""

    def __init__(self, kind: str, workers: int, scheduler: str | None):
        self.kind, self.workers, self.scheduler = kind, workers, scheduler

    def map(self, tasks: list[tuple[str, tuple]]):
        if self.kind == "serial":
            for key, args in tasks:
                try:
                    yield key, compute_point(*args)
                except Exception as exc:  # noqa: BLE001 (reported per point)
                    yield key, exc
        elif self.kind == "processes":
            yield from self._pool(tasks)
        else:
            yield from self._dask(tasks)

    def _pool(self, tasks):
        import multiprocessing

        # spawn: no fork of a threaded parent; one BLAS thread per worker process, as
        # dask's nanny does, so the workers do not oversubscribe the cores.
        saved = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update({k: "1" for k in _THREAD_VARS})
        try:
            pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)),
                                       mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_die_with_parent)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        finished = False
        try:
            pending = {pool.submit(compute_point, *args): key for key, args in tasks}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    key = pending.pop(fut)
                    exc = fut.exception()
                    yield key, (exc if exc is not None else fut.result())
            finished = True
        finally:
            if not finished:   # interrupted: drop the points in flight, do not wait for them
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    proc.terminate()
            pool.shutdown(wait=finished, cancel_futures=True)

    def _dask(self, tasks):
        try:
            from distributed import Client, as_completed
        except ImportError:
            raise SweepError("--scheduler needs dask.distributed: pip install "
                             "'signgd-transformer-sim[dask]'") from None
        try:
            client = Client(self.scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"--scheduler {self.scheduler}: cannot connect: {exc}") from None
        try:
            futures = {client.submit(compute_point, *args, key=f"sweep-point-{key}", pure=False): key
                       for key, args in tasks}
            try:
                for fut in as_completed(list(futures)):
                    key = futures[fut]
                    exc = fut.exception()
                    yield key, (exc if exc is not None else fut.result())
            finally:
                client.cancel(list(futures))
        finally:
            client.close()


def _die_with_parent() -> None:
    """Worker initializer: on Linux, ask the kernel to end this worker when the parent
    process dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG, SIGTERM)``); elsewhere
    nothing (the pool's own shutdown ends workers on a normal exit or an interrupt)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)          # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):                        # pragma: no cover - not Linux
        pass


CONNECT_TIMEOUT = "10s"
"""How long to wait for a dask scheduler before giving up."""
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_sweep(points: Sequence[Point], out: str | os.PathLike, *, workers: int | None = None,
              scheduler: str | None = None, save_runs: bool = False,
              match_train_loss: float | None = None, progress: bool = True,
              on_point_done: Callable[[Point], None] | None = None) -> SweepResult:
    """Run the points not finished in ``out`` and write ``out/results.csv``.

    Parameters
    ----------
    points : list of Point
        From :func:`expand` (with the same ``match_train_loss``).
    out : path
        Sweep directory; finished points found there are skipped.
    workers : int, optional
        Local worker processes (default: all cores); ``1`` runs in this process.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler; overrides ``workers``.
    save_runs : bool
        Also save each point's history under ``out/runs/<key>/``.
    on_point_done : callable, optional
        Called with each point after its files are written (tests use it to
        interrupt a sweep).

    Returns
    -------
    SweepResult
        ``rows`` holds every finished point's rows, in point order.
    """
    out = Path(out)
    check_out(out)
    if scheduler:
        check_scheduler(scheduler)
    (out / POINTS_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out / POINTS_DIR)
    remove_stale_temporaries(out)
    by_key = {p.key: p for p in points}
    todo = [p for p in points if not is_done(out, p, save_runs)]
    todo_keys = {p.key for p in todo}
    result = SweepResult(out, [], skipped=[p.key for p in points if p.key not in todo_keys])
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise SweepError(f"workers must be >= 1, got {workers}")
    kind = "dask" if scheduler else ("serial" if workers == 1 or len(todo) <= 1 else "processes")
    tasks = [(p.key, (p.config.to_json(), match_train_loss, save_runs)) for p in todo]
    from simulator.progress import Progress

    bar = Progress(len(todo), "sweep points", enabled=progress)
    try:
        for done, (key, outcome) in enumerate(_Executor(kind, workers, scheduler).map(tasks), 1):
            point = by_key[key]
            if isinstance(outcome, BaseException):
                result.failed[key] = f"{type(outcome).__name__}: {outcome}"
            else:
                _store(out, point, outcome, save_runs)
                result.computed.append(key)
                if on_point_done is not None:
                    on_point_done(point)
            bar.update(done)
    except KeyboardInterrupt as exc:
        result.interrupted = True
        result.terminated = isinstance(exc, _Terminated)
    finally:
        bar.close()
        for p in points:
            if points_file(out, p.key).is_file():
                result.rows.extend(read_point_rows(out, p.key))
        write_table(out / RESULTS_FILE, result.rows)
    return result


def _store(out: Path, point: Point, outcome: dict[str, Any], save_runs: bool) -> None:
    """Write a finished point: run directory first, then its rows (the 'done' mark)."""
    if save_runs:
        outcome["history"].save(out / RUNS_DIR / point.key)
    rows = point_rows(point, outcome)
    text = json.dumps({"key": point.key, "label": point.label, "config": point.config.to_dict(),
                       "rows": rows}, default=_json_default, indent=1)
    atomic_write_text(points_file(out, point.key), text + "\n")


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise SweepError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m analysis sweep",
                description="Run a grid of configs x optimizers x seeds; one CSV row per run.")
    p.add_argument("--base", metavar="FILE", help="base config.json (default: the built-in config)")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="grid over a config field (repeat for a product)")
    p.add_argument("--grid-file", metavar="FILE",
                   help='JSON {"field": [values]} (product) or [{"field": value}, ...] (list)')
    p.add_argument("--derive", action="append", default=[], metavar="FIELD=EXPRESSION",
                   help="a field computed per point from the others, after the grid, in the "
                        "order given, e.g. --derive steps=0.2/eta --derive "
                        "'record_every=max(1,steps//2000)'; numbers, numeric config fields, "
                        "+ - * / // ** %%, unary minus, min max round int float sqrt log exp "
                        "ceil floor; an integer field takes the nearest integer")
    p.add_argument("--seeds", type=int, default=None, help="runs per point (default: base n_seeds)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first run (default: base seed)")
    p.add_argument("--optimizers", default=None, metavar="NAME[:FIELD=V...],...",
                   help="e.g. signgd,adam,gd:eta=0.1 (default: the base optimizer)")
    p.add_argument("--match-train-loss", type=float, default=None, metavar="TARGET",
                   help="add metrics at the first recorded step with train loss <= TARGET")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep directory (resumable)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: all cores)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="dask.distributed scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--save-runs", action="store_true", help="also save each point's run directory")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def points_from_args(args: argparse.Namespace) -> list[Point]:
    base = SimulationConfig.load(args.base) if args.base else SimulationConfig()
    if args.seed is not None:
        base = base.replace(seed=args.seed)
    grids: list[Any] = []
    if args.grid_file:
        try:
            with open(args.grid_file, encoding="utf-8") as fh:
                grids.append(json.load(fh))
        except OSError as exc:
            raise SweepError(f"--grid-file {args.grid_file}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SweepError(f"--grid-file {args.grid_file}: not valid JSON: {exc}") from None
        if not isinstance(grids[-1], (dict, list)):
            raise SweepError(f"--grid-file {args.grid_file}: expected a JSON object or list")
    if args.grid:
        product: dict[str, list[Any]] = {}
        for text in args.grid:
            name, values = parse_grid_option(text)
            if name in product:
                raise SweepError(f"--grid {name}: given twice")
            product[name] = values
        grids.append(product)
    optimizers = [o for o in args.optimizers.split(",")] if args.optimizers else None
    return expand(base, grids, seeds=args.seeds, optimizers=optimizers,
                  match_train_loss=args.match_train_loss, derive=args.derive)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as an interrupt: finished points are kept, workers ended."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    import signal

    def handler(signum, frame):
        raise _Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:                                       # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis sweep ...``; returns the exit status."""
    prog = "python -m analysis sweep"
    try:
        args = build_parser().parse_args(argv)
        out = Path(args.out)
        check_out(out)
        if args.scheduler:
            check_scheduler(args.scheduler)
        points = points_from_args(args)
        done = sum(is_done(out, p, args.save_runs) for p in points)
        runs = sum(p.config.n_seeds for p in points)
        where = (f"dask scheduler {args.scheduler}" if args.scheduler else
                 f"{args.workers or os.cpu_count()} local process(es)")
        print(f"sweep: {len(points)} points ({runs} runs); {done} already done in {out}; "
              f"running {len(points) - done} on {where}", file=sys.stderr)
        with _sigterm_as_interrupt():
            result = run_sweep(points, out, workers=args.workers, scheduler=args.scheduler,
                               save_runs=args.save_runs, match_train_loss=args.match_train_loss,
                               progress=not args.quiet)
    except (SweepError, ConfigError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    for key, message in result.failed.items():
        point = next(p for p in points if p.key == key)
        shown = ", ".join(f"{k}={v!r}" for k, v in point.grid_values + point.derived)
        print(f"{prog}: point {key} ({point.label}; {shown}) failed: {message}", file=sys.stderr)
    table = out / RESULTS_FILE
    print(f"wrote {table}: {len(result.rows)} rows "
          f"({len(result.computed)} points computed, {len(result.skipped)} reused)")
    if result.interrupted:
        print(f"interrupted: rerun the same command to finish the "
              f"{len(points) - len(result.computed) - len(result.skipped)} missing points",
              file=sys.stderr)
        return 143 if result.terminated else 130
    return 1 if result.failed else 0
