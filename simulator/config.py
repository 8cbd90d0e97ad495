"""Simulation config: one frozen dataclass holding every parameter of a run.

Dimension names used throughout the package (declared once, here):

====== ==========================================================
``R``  number of independent runs advanced together (seeds)
``n``  training samples
``d``  input dimension (coordinate 0 holds the signal ``mu``)
``s``  noise sparsity (non-zero noise coordinates per sample)
``m_k`` query/key neurons (rows of ``W_Q`` and ``W_K``)
``m_v`` value neurons per output (rows of ``W_{V,+1}``, ``W_{V,-1}``)
``D``  coordinates the engine trains (the active basis, ``D <= d``)
``M``  stacked weight rows, ``M = 2 m_k + 2 m_v``
``L``  patches per input, always 2 (signal patch, noise patch)
``T``  recorded steps of a history
====== ==========================================================

Every field is validated when the config is built; a bad value raises
:class:`ConfigError` with a one-line message naming the field, its value and the
allowed range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, fields
from typing import Any

from .optimizers import names as _optimizer_names

OPTIMIZERS = _optimizer_names()
NOISE_KINDS = ("sparse", "dense", "none")
SIGNAL_POSITIONS = ("first", "random")
ENGINES = ("full", "reduced")
COORDINATES = ("active", "all")
REDUCED_INITS = ("data", "distribution")


class ConfigError(ValueError):
    """A config field is out of its allowed range (the message names it)."""


@dataclass(frozen=True)
class SimulationConfig:
    """All parameters of a simulation (``docs/theory.md`` sections 1-3).

    The defaults form the built-in main job: a SignGD run whose four stages are
    cleanly separated in time (``docs/theory.md`` section 6).
    """

    # --- data (section 1) ---
    d: int = 20_000
    """Input dimension; only coordinate 0 and the training supports are trained,
    so the cost of a run does not grow with ``d``."""
    n: int = 8
    """Training samples. With ``s = 20`` and ``d = 2*10^4`` the expected number of
    shared noise coordinates is about ``n (n - 1) s^2 / (2 d) = 0.56``; samples that do share
    are reported, never hidden."""
    s: int = 20
    """Noise sparsity: non-zero noise coordinates per sample."""
    sigma_p: float = 1.0
    """Noise scale: each non-zero noise entry is ``N(0, sigma_p^2)``."""
    mu_norm: float = 0.05
    """Signal strength ``||mu||``, tiny next to ``||xi||_1 ~ 16`` as in the paper's
    regime, so Stage IV leaves ``s_{i,11}`` near 1/2."""
    noise: str = "sparse"
    """``sparse`` (the paper's model), ``dense`` (all ``d - 1`` coordinates) or ``none``."""
    label_flip: float = 0.0
    """Probability that a training/test label is flipped (label noise)."""
    signal_position: str = "first"
    """``first``: the signal is patch 1; ``random``: patch order drawn per sample."""
    n_test: int = 500
    """Held-out test samples (fresh draws) for test loss and test error."""

    # --- model (section 2) ---
    m_k: int = 10
    """Query/key neurons."""
    m_v: int = 10
    """Value neurons per output."""
    sigma_0: float = 0.005
    """Initial weight scale. Initial attention scores are about
    ``sigma_0^2 sigma_p^2 s sqrt(m_k) ~ 1.6e-3``, far below 1 (section 6)."""

    # --- optimizer (section 3) ---
    optimizer: str = "signgd"
    """One of the registered optimizers (:mod:`simulator.optimizers`)."""
    eta: float = 5e-5
    """Learning rate. One SignGD step moves a noise inner product by
    ``eta ||xi||_1 ~ 8e-4``, small next to the initial ``|Qn + Kn| ~ 3e-2``."""
    beta1: float | None = None
    """First moment decay (Adam, Signum, Lion); ``None``: the optimizer's own
    default (0.9 for each)."""
    beta2: float | None = None
    """Second moment decay (Adam) or momentum decay (Lion); ``None``: the
    optimizer's own default (Adam 0.999, Lion 0.99)."""
    eps: float | None = None
    """Adam's denominator offset; ``None``: Adam's default 1e-8."""
    steps: int = 4000
    """Training steps: enough for the training loss to fall below ``1e-3``."""

    # --- runs and recording ---
    seed: int = 0
    """Seed of the first run; run ``r`` of a batch uses ``seed + r``, so any run of
    a batch is reproducible on its own."""
    n_seeds: int = 1
    """Independent runs ``R`` advanced together by one vectorized step."""
    record_every: int = 1
    """Record the history every this many steps (step 0 and the last are always
    recorded). The one-step law checks need ``record_every = 1``."""
    engine: str = "full"
    """``full``: train the weights; ``reduced``: the exact dynamics of section 9."""
    coordinates: str = "active"
    """``active``: train only coordinate 0 and the union of training supports
    (section 8); ``all``: the plain dense path over all ``d`` coordinates."""
    reduced_init: str = "data"
    """Initial state of ``engine='reduced'``. ``data`` (default): draw the training
    set and initial weights exactly as the full engine does, so the two engines can
    be compared run for run (refused when training supports overlap).
    ``distribution``: data-free, draw the state from its exact distribution given
    disjoint supports; its cost does not grow with ``d``, ``s`` or overlaps."""

    def __post_init__(self) -> None:
        _validate(self)

    # --- derived ---
    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each run of the batch."""
        return tuple(range(self.seed, self.seed + self.n_seeds))

    @property
    def n_weight_rows(self) -> int:
        """``M = 2 m_k + 2 m_v`` stacked weight rows."""
        return 2 * self.m_k + 2 * self.m_v

    def replace(self, **changes: Any) -> "SimulationConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SimulationConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SimulationConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object of field: value")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SimulationConfig":
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_json(fh.read())
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def choices(name: str) -> tuple[str, ...] | None:
    """The allowed values of a choice field (``None`` for a number field)."""
    rule = _RULES[name]
    return rule[1] if rule[0] == "choice" else None


def allowed_range(name: str) -> str:
    """The allowed values of field ``name`` in words, as validation states them."""
    rule = _RULES[name]
    if rule[0] == "choice":
        return "one of " + ", ".join(rule[1])
    if rule[0] == "int":
        lo, hi = rule[1], rule[2]
        if hi is None:
            return f"integer >= {lo}"
        return f"integer from {lo} to {'d - 1' if callable(hi) else hi}"
    lo, hi, lo_open, hi_open, optional = rule[1:]
    text = (f"{'(' if lo_open else '['}{_fmt_bound(lo)}, "
            f"{_fmt_bound(hi) + (')' if hi_open else ']') if hi is not None else 'inf)'}")
    return text + (" or None (the optimizer's default)" if optional else "")


def field_docs() -> dict[str, str]:
    """Each field's docstring (the string under it in :class:`SimulationConfig`),
    read from this module's source: the one place a field is documented."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(SimulationConfig))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_type(name: str) -> type:
    """The value type of config field ``name`` (``int``, ``float`` or ``str``; an
    optional field's type is that of its values)."""
    rule = _RULES[name]
    return {"int": int, "float": float, "choice": str}[rule[0]]


# ---------------------------------------------------------------------------
# validation: declarative rules, checked once when a config is built
# ---------------------------------------------------------------------------

def _int_rule(lo, hi=None):
    return ("int", lo, hi)


def _float_rule(lo, hi=None, lo_open=False, hi_open=False, optional=False):
    return ("float", lo, hi, lo_open, hi_open, optional)


def _choice_rule(options):
    return ("choice", options)


_RULES: dict[str, tuple] = {
    "d": _int_rule(2),
    "n": _int_rule(1),
    "s": _int_rule(1, lambda c: c.d - 1),
    "sigma_p": _float_rule(0.0),
    "mu_norm": _float_rule(0.0),
    "noise": _choice_rule(NOISE_KINDS),
    "label_flip": _float_rule(0.0, 0.5, hi_open=False),
    "signal_position": _choice_rule(SIGNAL_POSITIONS),
    "n_test": _int_rule(1),
    "m_k": _int_rule(1),
    "m_v": _int_rule(1),
    "sigma_0": _float_rule(0.0, lo_open=True),
    "optimizer": _choice_rule(OPTIMIZERS),
    "eta": _float_rule(0.0, lo_open=True),
    "beta1": _float_rule(0.0, 1.0, hi_open=True, optional=True),
    "beta2": _float_rule(0.0, 1.0, hi_open=True, optional=True),
    "eps": _float_rule(0.0, optional=True),
    "steps": _int_rule(0),
    "seed": _int_rule(0, 2**63 - 1),
    "n_seeds": _int_rule(1),
    "record_every": _int_rule(1),
    "engine": _choice_rule(ENGINES),
    "coordinates": _choice_rule(COORDINATES),
    "reduced_init": _choice_rule(REDUCED_INITS),
}


def _fmt_bound(b) -> str:
    return f"{b:g}" if isinstance(b, float) else str(b)


def _validate(cfg: SimulationConfig) -> None:
    for f in fields(cfg):
        rule = _RULES[f.name]
        value = getattr(cfg, f.name)
        kind = rule[0]
        if kind == "int":
            lo, hi = rule[1], rule[2]
            hi = hi(cfg) if callable(hi) else hi
            integral = isinstance(value, numbers.Integral) or (
                isinstance(value, numbers.Real) and float(value).is_integer())
            if isinstance(value, bool) or not integral:
                raise ConfigError(f"{f.name} must be an integer, got {value!r}")
            value = int(value)                    # numpy and integral floats -> int
            object.__setattr__(cfg, f.name, value)
            upper = "" if hi is None else f" and {hi}"
            if value < lo or (hi is not None and value > hi):
                rng = f"between {lo}{upper}" if hi is not None else f">= {lo}"
                raise ConfigError(f"{f.name} must be an integer {rng}, got {value}")
        elif kind == "float":
            lo, hi, lo_open, hi_open, optional = rule[1:]
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{f.name} must be a number, got {value!r}")
            value = float(value)
            object.__setattr__(cfg, f.name, value)
            bad = (not math.isfinite(value)
                   or (value <= lo if lo_open else value < lo)
                   or (hi is not None and (value >= hi if hi_open else value > hi)))
            if bad:
                left = "(" if lo_open else "["
                right = (")" if hi_open else "]") if hi is not None else ")"
                upper = _fmt_bound(hi) if hi is not None else "inf"
                raise ConfigError(
                    f"{f.name} must be finite and in {left}{_fmt_bound(lo)}, {upper}{right}, got {value!r}")
        else:
            options = rule[1]
            if value not in options:
                raise ConfigError(f"{f.name} must be one of {', '.join(options)}; got {value!r}")
    if cfg.seed + cfg.n_seeds - 1 > 2**63 - 1:   # run r uses seed + r, an int64
        raise ConfigError(f"seed + n_seeds - 1 must be at most {2**63 - 1}, "
                          f"got {cfg.seed} + {cfg.n_seeds} - 1")
    if cfg.engine == "reduced" and cfg.coordinates == "all":
        raise ConfigError("coordinates='all' applies to engine='full' only; got engine='reduced'")
    if cfg.engine == "full" and cfg.reduced_init != "data":
        raise ConfigError(f"reduced_init={cfg.reduced_init!r} applies to engine='reduced' only; "
                          "got engine='full'")
