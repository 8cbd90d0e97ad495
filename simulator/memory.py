"""Memory: what a run of a config needs, refused before anything is allocated.

Whether a config fits depends on the machine, not on the config, so this is not part of
the config's validation (a saved ``config.json`` stays loadable anywhere):
:func:`estimated_bytes` estimates the peak from the config alone, :func:`memory_limit`
is the machine's budget (or ``SIGNGD_MEMORY_LIMIT``), and :func:`check_memory` refuses
a run above it with one line naming the field that dominates.
"""

from __future__ import annotations

import copy
import math
import os
import re

from .config import _RULES, ConfigError, SimulationConfig, _show

MEMORY_FRACTION = 0.8
"""Default limit of :func:`check_memory`: this fraction of the machine's memory."""
MEMORY_LIMIT_ENV = "SIGNGD_MEMORY_LIMIT"
"""Environment variable overriding the limit: bytes (``"8e9"``, ``"12GB"``, ``"500MB"``)
or ``"none"`` for no limit."""
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def _history_floats(config: SimulationConfig) -> int:
    """Floats of one record of one run (``simulator.history``): 7 scalars,
    ``margin, lprime`` (n each), ``Vn`` (n (L - 1)), ``softmax`` (L^2 n),
    ``Qs, Ks`` (m_k each), ``Qn, Kn`` (m_k n (L - 1) each)."""
    n, m_k, L = config.n, config.m_k, config.n_patches
    nP = n * (L - 1)
    return 7 + 2 * n + nP + L * L * n + 2 * m_k + 2 * m_k * nP


def recorded_steps(config: SimulationConfig) -> int:
    """``T``, the number of recorded steps: ``0, k, 2k, ...`` and the last."""
    k = config.record_every
    return config.steps // k + 1 + (1 if config.steps % k else 0)


def memory_terms(config: SimulationConfig) -> dict[str, int]:
    """The terms of :func:`estimated_bytes`, in bytes, by name."""
    R, n, s, d, n_test = config.n_seeds, config.n, config.s, config.d, config.n_test
    M, L, T = config.n_weight_rows, config.n_patches, recorded_steps(config)
    P = L - 1                                          # noise patches per sample
    terms = {"history": 8 * 2 * (T * (R * _history_floats(config) + 2) + R * (6 * n + 3 * n * P + 2))}
    nP, ntP = n * P, n_test * P                        # noise patches of the training, test sets
    mkn = config.m_k * nP
    if config.engine == "reduced":
        from .reduced import chunk_size   # noqa: PLC0415 (the engine's own chunking)

        s_x = s if config.noise == "sparse" else 0
        per_run = 12 * mkn + (2 * config.m_k + 6) * ntP + 2 * nP * s_x + 4 * L * L * n
        if config.optimizer != "signgd":
            per_run += 10 * mkn + 3 * s_x * mkn
        init = 5 * M * (1 + nP * s_x) if config.reduced_init == "data" else 0
        terms["working"] = 8 * (chunk_size(config) * per_run + init + (2 * config.m_k + 1) * ntP)
        terms["state"] = 8 * 2 * R * (2 * mkn + 2 * config.m_k + 8 * nP + 1)
        return terms
    s_x = {"sparse": s, "dense": d - 1, "none": 0}[config.noise]
    whole = config.coordinates == "all" or config.noise == "dense"
    D = d if whole else min(d, 1 + nP * s_x)
    dense_part = config.noise == "dense"               # every column is shared: Wd, Gd are (R, M, D)
    stateful = config.optimizer != "signgd"
    # supports and values of every run's sets; the test noise inside the basis (all of
    # it when D = d) as CSR, built from a few index arrays; else W_0 on the fresh test
    # coordinates, drawn for one run at a time
    split = 12 * R * s_x * ntP + 44 * s_x * ntP if whole else 24 * M * s_x * ntP
    terms["data"] = 16 * R * s_x * (nP + ntP) + split
    terms["inputs"] = R * n * L * D * (9 + 8 * dense_part)
    terms["weights"] = 8 * M * D * (R * (2 + 2 * dense_part + 5 * stateful * dense_part) + 5)
    s_b = s if config.noise == "sparse" else 0
    terms["blocks"] = 8 * R * nP * s_b * M * (2 + 5 * stateful)
    terms["test"] = 8 * R * n_test * M * (P + 3 * L)
    return terms


def estimated_bytes(config: SimulationConfig) -> int:
    """Bytes a run of ``config`` needs at its peak, estimated from the config alone.

    With ``R = n_seeds``, ``M = 2 m_k + 2 m_v``, ``L = n_patches`` patches (``P = L - 1``
    noise patches a sample; ``n s`` below is ``n P s``), ``T`` recorded steps
    (:func:`recorded_steps`) and 8-byte floats, the estimate is the sum of:

    * ``history``: ``2 x 8 (T (R H + 2) + R (6 n + 3 n P + 2))``,
      ``H = 7 + 2 n + n P + L^2 n + 2 m_k + 2 m_k n P`` floats a record of a run; twice,
      for the copy a save or a report holds.

    Full engine (``engine='full'``), with ``D`` trained coordinates (``D = 1 + n s`` on
    the active basis, ``D = d`` with ``coordinates='all'`` or ``noise='dense'``) and
    ``s_x`` noise coordinates a sample (``s``; ``d - 1`` dense; 0 without noise):

    * ``data``: ``16 R s_x (n + n_test)`` for the supports and values of the training
      and test sets; plus, when ``D = d``, ``12 R s_x n_test`` for the test noise inside
      the basis (sparse) and ``44 s_x n_test`` for building it, else ``24 M s_x n_test``
      for the initial weights of one run's fresh test coordinates;
    * ``inputs``: ``R n L D`` floats (``X``) and its non-zero mask; twice with dense
      noise, whose every column is in the engine's dense part;
    * ``weights``: ``8 M D (R c + 5)``: ``W_0`` and ``W`` (``c = 2``), with dense noise
      also the dense part and its gradient (``c = 4``) and an optimizer's state
      (``c = 9`` but for SignGD); ``5 M D`` for drawing one run's initial weights;
    * ``blocks``: ``8 R n s M (2 + 5)`` for the block weights and gradients (and, but for
      SignGD, the optimizer's state and its joined copies);
    * ``test``: ``8 R n_test M (1 + 3 L)`` for the frozen test projections, the
      projections of every patch and the forward pass over them.

    Reduced engine (``engine='reduced'``): the working memory of one chunk of runs
    (:func:`simulator.reduced.chunk_size` runs of ``12 m_k n + (2 m_k + 6) n_test + 2 n s``
    floats each, more for optimizers with state), drawing one run's initial weights
    (``5 M (1 + n s)``) and test inputs, and the final state of every run,
    ``O(R m_k n)``.

    The estimate is meant to be an upper bound within a small factor; it ignores
    Python's and NumPy's fixed overheads (tens of MB).
    """
    return sum(memory_terms(config).values())


def _physical_memory() -> int | None:
    """Bytes of memory of this machine (or of this process's cgroup, if smaller)."""
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):     # not POSIX: try Windows
        try:
            import ctypes  # noqa: PLC0415

            class _Status(ctypes.Structure):
                _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                            ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                            ("ullTotalPageFile", ctypes.c_ulonglong),
                            ("ullAvailPageFile", ctypes.c_ulonglong),
                            ("ullTotalVirtual", ctypes.c_ulonglong),
                            ("ullAvailVirtual", ctypes.c_ulonglong),
                            ("sullAvailExtendedVirtual", ctypes.c_ulonglong)]

            status = _Status()
            status.dwLength = ctypes.sizeof(_Status)
            if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
                total = int(status.ullTotalPhys)
        except Exception:  # noqa: BLE001 (no way to tell: no limit)
            total = None
    for cgroup in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(cgroup, encoding="ascii") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) > 0:
            total = int(text) if total is None else min(total, int(text))
        break
    return total if total and total > 0 else None


def memory_limit() -> int | None:
    """Bytes :func:`check_memory` allows by default: ``$SIGNGD_MEMORY_LIMIT`` if set,
    else 80% of the machine's memory (``None``: unknown, no limit)."""
    text = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if text:
        if text.lower() == "none":
            return None
        match = re.fullmatch(r"([0-9.eE+]+)\s*([kKmMgGtTpP]?[bB]?)", text)
        try:
            value = float(match.group(1)) * _UNITS[match.group(2).upper().rstrip("B")]
        except (AttributeError, ValueError, KeyError):
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{MEMORY_LIMIT_ENV} must be a number of bytes such as 8e9 or "
                              f"12GB, or none; got {_show(text)}")
        return int(value)
    total = _physical_memory()
    return None if total is None else int(MEMORY_FRACTION * total)


def format_bytes(n: float) -> str:
    """``6.4 TB``, ``19 GB``, ``512 kB`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"):
        if n < 999.5 or unit == "YB":
            break
        n /= 1000.0
    if n >= 1e6:
        return f"{n:.1e} {unit}"
    return f"{n:.1f} {unit}" if n < 9.95 and unit != "B" else f"{n:.0f} {unit}"


_SIZES = ("n_test", "d", "n", "s", "m_k", "m_v", "n_seeds", "steps")
"""Fields :func:`check_memory` may name, most specific first (the first wins a tie)."""


def dominant_field(config: SimulationConfig) -> str:
    """The size to lower: of the sizes raised above their default whose halving
    lowers :func:`estimated_bytes` by a quarter or more (else of all sizes), the one
    whose halving lowers it most; of those within 1% of it, the one furthest above
    its default."""
    total = estimated_bytes(config)
    defaults = SimulationConfig()
    growth, gains = {}, {}
    for name in _SIZES:
        value = getattr(config, name)
        growth[name] = value / getattr(defaults, name)
        half = copy.copy(config)                       # not validated: only the formula reads it
        object.__setattr__(half, name, max(value // 2, _RULES[name][1]))
        gains[name] = 1.0 - estimated_bytes(half) / total if total else 0.0
    pool = [name for name in _SIZES if growth[name] > 1 and gains[name] >= 0.25] or list(_SIZES)
    best = max(gains[name] for name in pool)
    return max((name for name in pool if gains[name] >= best - 0.01), key=growth.get)


def check_memory(config: SimulationConfig, *, limit: int | None = None) -> int:
    """Refuse a config whose :func:`estimated_bytes` exceeds ``limit`` (default:
    :func:`memory_limit`); returns the estimate.

    The message names the :func:`dominant_field`, e.g.
    ``n_test=100000000 needs about 2.2 TB of memory (limit 20 GB); lower n_test``.

    Raises
    ------
    ConfigError
        When the estimate exceeds the limit.
    """
    terms = memory_terms(config)
    total = sum(terms.values())
    limit = memory_limit() if limit is None else limit
    if limit is None or total <= limit:
        return total
    field = dominant_field(config)
    hint = [f"lower {field}"]
    if max(terms, key=terms.get) == "history":
        hint.append("raise record_every")
    if field == "d" and config.coordinates == "all":
        hint.append("use coordinates='active'")
    raise ConfigError(f"{field}={getattr(config, field)} needs about {format_bytes(total)} of memory "
                      f"(limit {format_bytes(limit)}); {' or '.join(hint)}")
