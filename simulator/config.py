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
``L``  patches per input, ``n_patches`` (one signal patch, ``L - 1`` noise patches)
``noise`` the noise patches of the training samples, ``n (L - 1)``, patch-major: index
       ``j n + i`` is noise patch ``j`` of sample ``i`` (with ``L = 2`` the samples)
``T``  recorded steps of a history
====== ==========================================================

Every field is validated when the config is built; a bad value raises
:class:`ConfigError` with a one-line message naming the field, its value and the
allowed range. Integer fields have upper bounds where the machine imposes them
(:data:`INT64_MAX`, :data:`MAX_COUNT`, :data:`MAX_STEPS`), float fields must be finite,
and config files that cannot be decoded (bad JSON, nesting too deep, integers of
thousands of digits, non-UTF-8 bytes) get one line too.

Whether a config fits in memory depends on the machine, not on the config, so it is
not part of validation (a saved ``config.json`` stays loadable anywhere):
:func:`simulator.memory.estimated_bytes` estimates what a run needs and
:func:`simulator.memory.check_memory`, called before anything is allocated, refuses one
that exceeds :func:`~simulator.memory.memory_limit` with one line naming the field that
dominates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError
from .optimizers import names as _optimizer_names

OPTIMIZERS = _optimizer_names()
NOISE_KINDS = ("sparse", "dense", "none")
SIGNAL_POSITIONS = ("first", "random")
ENGINES = ("full", "reduced")
COORDINATES = ("active", "all")
REDUCED_INITS = ("data", "distribution")
DATA_SOURCES = ("synthetic", "digits")
POOLINGS = ("sum", "mean")

INT64_MAX = 2**63 - 1
"""Largest ``d`` and ``seed + n_seeds - 1``: coordinates and seeds are int64 (the
padding coordinate of a batch is ``d`` itself)."""
MAX_COUNT = 2**31 - 1
"""Largest count of samples, neurons or runs (``n``, ``n_test``, ``m_k``, ``m_v``,
``n_seeds``). No run with more fits in memory (:func:`simulator.memory.check_memory`
refuses far smaller ones); the bound keeps array shapes built from products of counts
inside int64."""
MAX_STEPS = 2**53
"""Largest ``steps`` and ``record_every``: step numbers are int64, and the recorded
steps are laid out with ``np.arange``, which computes its length in float64, exact up
to ``2**53``. (At a microsecond a step, ``2**53`` steps take 285 years.)"""


MAX_PATCHES = 64
"""Largest ``n_patches``: the softmax of a sample is ``L x L``; beyond a few dozen
patches a run is a different model than the theory's."""


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
    """``first``: the signal is patch 1; ``random``: its position is drawn uniformly
    among the ``n_patches`` patches, per sample."""
    n_patches: int = 2
    """``L``: patches per input, one signal patch and ``L - 1`` noise patches, each
    with its own ``s``-sparse support (2 in the paper's setting)."""
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

    score_scale: float = 1.0
    """Score scale ``tau``: ``z_lk = tau <W_Q x_l, W_K x_k>``; 1 as in the paper's
    setting, ``1/sqrt(m_k)`` in standard transformers (give it by value)."""
    pooling: str = "sum"
    """``sum``: ``f = sum_l sum_k S_lk u_k`` over query positions ``l``; ``mean``:
    ``(1/L)`` times that, as the ViT line of work averages."""
    feature_noise: float = 0.0
    """``alpha``: the noise patch is ``xi - alpha y mu`` (the sparse-noise model of Zou
    et al. 2023), so it has a component on the signal coordinate; 0 here."""
    batch_size: int | None = None
    """Samples per step, drawn without replacement from a stream keyed by (seed,
    step); ``None``: all ``n`` (full batch, the paper's setting)."""

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

    # --- data source ---
    data: str = "synthetic"
    """``synthetic``: the signal-noise model of docs/theory.md section 1.
    ``digits``: scikit-learn's 8x8 digits as the signal patch (two classes, the
    first ``y = +1``), the noise patch as configured; then ``d = 64 + `` the number of
    noise coordinates, ``n`` and ``n_test`` are even (half per class), ``mu_norm`` is
    the norm of every image patch, and the run needs the full engine (the extra
    ``digits``; :mod:`simulator.digits`)."""
    digit_positive: int = 3
    """``data='digits'``: the digit labelled ``y = +1`` (3 vs 8 is one of the harder pairs)."""
    digit_negative: int = 8
    """``data='digits'``: the digit labelled ``y = -1``."""

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
        if not isinstance(data, Mapping):
            raise ConfigError("config JSON must be an object of field: value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(_show(k) if not isinstance(k, str) else k for k in set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    def changes(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what names a run: adding a field
        at its default renames nothing)."""
        default = SimulationConfig()
        return {k: v for k, v in self.to_dict().items() if getattr(default, k) != v}

    def digest(self) -> str:
        """A short hash of :meth:`changes`: stable when a field is added at its default."""
        import hashlib

        return hashlib.sha256(json.dumps(self.changes(), sort_keys=True).encode()).hexdigest()[:8]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SimulationConfig":
        try:
            data = json.loads(text, parse_int=parse_integer)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        except RecursionError:                    # [[[[...]]]] deeper than the stack
            field = _too_deep_field(text)
            where = f"the value of {field}" if field is not None else "the config"
            raise ConfigError(f"config is not valid JSON: {where} is nested too deeply") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object of field: value")
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SimulationConfig":
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text "
                              f"(byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
        return cls.from_json(text)


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
        bound = {"s": "d - 1", "batch_size": "n"}.get(name, hi) if callable(hi) else hi
        text = f"integer >= {lo}" if hi is None else f"integer from {lo} to {bound}"
        return text + (" or None (all n samples)" if len(rule) > 3 and rule[3] else "")
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

def _int_rule(lo, hi, optional=False):
    """An integer in ``[lo, hi]`` (``hi`` may be a function of the config);
    ``optional``: ``None`` is allowed too."""
    return ("int", lo, hi, optional)


def _float_rule(lo, hi=None, lo_open=False, hi_open=False, optional=False):
    return ("float", lo, hi, lo_open, hi_open, optional)


def _choice_rule(options):
    return ("choice", options)


_RULES: dict[str, tuple] = {
    "d": _int_rule(2, INT64_MAX),
    "n": _int_rule(1, MAX_COUNT),
    "s": _int_rule(1, lambda c: c.d - 1),
    "sigma_p": _float_rule(0.0),
    "mu_norm": _float_rule(0.0),
    "noise": _choice_rule(NOISE_KINDS),
    "label_flip": _float_rule(0.0, 0.5, hi_open=False),
    "signal_position": _choice_rule(SIGNAL_POSITIONS),
    "n_patches": _int_rule(2, MAX_PATCHES),
    "n_test": _int_rule(1, MAX_COUNT),
    "m_k": _int_rule(1, MAX_COUNT),
    "m_v": _int_rule(1, MAX_COUNT),
    "sigma_0": _float_rule(0.0, lo_open=True),
    "score_scale": _float_rule(0.0, lo_open=True),
    "pooling": _choice_rule(POOLINGS),
    "feature_noise": _float_rule(0.0, 1.0, hi_open=True),
    "batch_size": _int_rule(1, lambda c: c.n, optional=True),
    "optimizer": _choice_rule(OPTIMIZERS),
    "eta": _float_rule(0.0, lo_open=True),
    "beta1": _float_rule(0.0, 1.0, hi_open=True, optional=True),
    "beta2": _float_rule(0.0, 1.0, hi_open=True, optional=True),
    "eps": _float_rule(0.0, optional=True),
    "steps": _int_rule(0, MAX_STEPS),
    "seed": _int_rule(0, INT64_MAX),
    "n_seeds": _int_rule(1, MAX_COUNT),
    "record_every": _int_rule(1, MAX_STEPS),
    "engine": _choice_rule(ENGINES),
    "coordinates": _choice_rule(COORDINATES),
    "reduced_init": _choice_rule(REDUCED_INITS),
    "data": _choice_rule(DATA_SOURCES),
    "digit_positive": _int_rule(0, 9),
    "digit_negative": _int_rule(0, 9),
}


def _fmt_bound(b) -> str:
    return f"{b:g}" if isinstance(b, float) else str(b)


class _LongInteger:
    """An integer literal too long for ``int()`` (Python refuses more than
    ``sys.get_int_max_str_digits()`` digits): kept as text so that validation can
    name the field it was given for."""

    def __init__(self, text: str):
        self.text = text.strip()
        self.digits = len(self.text.lstrip("+-"))

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


def parse_integer(text: str):
    """``int(text)``; a decimal literal too long for ``int()`` gives a placeholder that
    validation refuses in one line naming the field (the CLI's and the config
    files' integers). Raises ``ValueError`` for text that is not an integer."""
    try:
        return int(text)
    except ValueError:
        if text.strip().lstrip("+-").isdigit():
            return _LongInteger(text)
        raise



def _too_deep_field(text: str) -> str | None:
    """The top-level key of a config JSON object whose value is nested too deeply to
    decode (``None`` when it cannot be told)."""
    decoder = json.JSONDecoder(parse_int=parse_integer)
    space = re.compile(r"\s*")
    try:
        i = space.match(text, 0).end()
        if text[i] != "{":
            return None
        i += 1
        while True:
            i = space.match(text, i).end()
            key, i = decoder.raw_decode(text, i)
            i = space.match(text, i).end()
            if not isinstance(key, str) or text[i] != ":":
                return None
            i = space.match(text, i + 1).end()
            try:
                _, i = decoder.raw_decode(text, i)
            except RecursionError:
                return key
            i = space.match(text, i).end()
            if text[i] != ",":
                return None
            i += 1
    except (ValueError, IndexError):
        return None


_SHOW_DIGITS = 40   # integers with more digits are shown by their length
_SHOW_CHARS = 60    # longer reprs are cut


def _decimal_digits(value: int) -> int:
    """Number of decimal digits of ``|value|`` (no ``str()``: it refuses long integers)."""
    v = abs(value)
    if v < 10:
        return 1
    k = int((v.bit_length() - 1) * 0.30102999566398120)     # floor(log10 2^(b-1))
    return k + 2 if v >= 10 ** (k + 1) else k + 1


def _show(value) -> str:
    """``value`` as an error message shows it: its repr, cut to one short line;
    integers of more than 40 digits by their length."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        digits = _decimal_digits(int(value))
        if digits > _SHOW_DIGITS:
            return f"an integer of {digits} digits"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 (a nested list too deep for repr, a broken __repr__)
        return f"a {type(value).__name__}"
    text = " ".join(text.split())                             # one line
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + "..."


def _as_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` as a Python int in ``[lo, hi]``, or :class:`ConfigError`."""
    rng = f"between {lo} and {hi}"
    if isinstance(value, _LongInteger):
        raise ConfigError(f"{name} must be an integer {rng}, got {_show(value)}")
    integral = isinstance(value, numbers.Integral)
    if not integral and isinstance(value, numbers.Real):
        try:
            integral = float(value).is_integer()
        except (OverflowError, ValueError):
            integral = False
    if isinstance(value, bool) or not integral:
        raise ConfigError(f"{name} must be an integer, got {_show(value)}")
    number = int(value)                           # numpy and integral floats -> int
    if not lo <= number <= hi:
        shown = _show(number if isinstance(value, numbers.Integral) else value)
        raise ConfigError(f"{name} must be an integer {rng}, got {shown}")
    return number


def _as_float(name: str, value, lo, hi, lo_open: bool, hi_open: bool) -> float:
    """``value`` as a finite Python float in the interval, or :class:`ConfigError`."""
    left = "(" if lo_open else "["
    right = (")" if hi_open else "]") if hi is not None else ")"
    upper = _fmt_bound(hi) if hi is not None else "inf"
    interval = f"{left}{_fmt_bound(lo)}, {upper}{right}"
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, _LongInteger)):
        raise ConfigError(f"{name} must be a number, got {_show(value)}")
    try:
        number = float(value) if not isinstance(value, _LongInteger) else math.inf
    except (OverflowError, ValueError):           # an int beyond float64
        number = math.inf
    bad = (not math.isfinite(number)
           or (number <= lo if lo_open else number < lo)
           or (hi is not None and (number >= hi if hi_open else number > hi)))
    if bad:
        shown = repr(number) if math.isfinite(number) or isinstance(value, float) else _show(value)
        raise ConfigError(f"{name} must be finite and in {interval}, got {shown}")
    return number


def _validate(cfg: SimulationConfig) -> None:
    for f in fields(cfg):
        rule = _RULES[f.name]
        value = getattr(cfg, f.name)
        kind = rule[0]
        if kind == "int":
            lo, hi = rule[1], rule[2]
            if len(rule) > 3 and rule[3] and value is None:
                continue
            hi = hi(cfg) if callable(hi) else hi
            object.__setattr__(cfg, f.name, _as_int(f.name, value, lo, hi))
        elif kind == "float":
            *bounds, optional = rule[1:]
            if optional and value is None:
                continue
            object.__setattr__(cfg, f.name, _as_float(f.name, value, *bounds))
        else:
            options = rule[1]
            if not isinstance(value, str) or value not in options:
                raise ConfigError(f"{f.name} must be one of {', '.join(options)}; got {_show(value)}")
    if cfg.seed + cfg.n_seeds - 1 > INT64_MAX:   # run r uses seed + r, an int64
        raise ConfigError(f"seed + n_seeds - 1 must be at most {INT64_MAX}, "
                          f"got {cfg.seed} + {cfg.n_seeds} - 1")
    if cfg.engine == "reduced" and cfg.coordinates == "all":
        raise ConfigError("coordinates='all' applies to engine='full' only; got engine='reduced'")
    if cfg.engine == "full" and cfg.reduced_init != "data":
        raise ConfigError(f"reduced_init={cfg.reduced_init!r} applies to engine='reduced' only; "
                          "got engine='full'")
    if cfg.data == "digits":
        _validate_digits(cfg)


def _validate_digits(cfg: SimulationConfig) -> None:
    """The constraints of ``data='digits'`` (one line each, naming the field)."""
    pixels = 64
    if cfg.engine != "full" or cfg.coordinates != "active":
        raise ConfigError("data='digits' needs engine='full' and coordinates='active' (images are "
                          f"not the synthetic signal patch); got engine={cfg.engine!r}, "
                          f"coordinates={cfg.coordinates!r}")
    if cfg.digit_positive == cfg.digit_negative:
        raise ConfigError(f"digit_negative must differ from digit_positive={cfg.digit_positive}, "
                          f"got {cfg.digit_negative}")
    for name in ("n", "n_test"):
        if getattr(cfg, name) % 2:
            raise ConfigError(f"{name} must be even with data='digits' (half per class), "
                              f"got {getattr(cfg, name)}")
    if cfg.d <= pixels:
        raise ConfigError(f"d must be at least 65 with data='digits' (64 pixels, then the noise "
                          f"coordinates), got {cfg.d}")
    if cfg.mu_norm == 0:
        raise ConfigError("mu_norm must be in (0, inf) with data='digits' (the norm of every "
                          "image patch), got 0.0")
    for name, value, default in (("label_flip", cfg.label_flip, 0.0),
                                 ("signal_position", cfg.signal_position, "first"),
                                 ("n_patches", cfg.n_patches, 2)):
        if value != default:
            raise ConfigError(f"{name}={value!r} is not available with data='digits'; use {default!r}")
