"""Safe arithmetic expressions over named numbers (the sweep's ``--derive`` fields).

An expression such as ``0.2/eta`` or ``max(1, steps//2000)`` is parsed with :mod:`ast`
and walked node by node; nothing is passed to ``eval``. Allowed:

* numbers (``3``, ``0.2``, ``1e-4``), and names the caller provides (config fields);
* the binary operators ``+ - * / // ** %`` and unary minus, with Python's precedence;
* calls of ``min, max, round, int, float, sqrt, log, exp, ceil, floor`` (``log(x)`` is
  natural, ``log(x, base)`` takes a base; ``round(x)`` gives an integer).

Everything else (attribute access, subscripts, comparisons, strings, keyword
arguments, calls of any other name, lambdas, ...) is refused when the expression is
parsed, with a one-line :class:`ExpressionError`. Evaluation errors (division by zero,
``sqrt`` of a negative number, an overflow, a complex or non-finite result) are
one-line :class:`ExpressionError` too.

>>> e = Expression.parse("max(1, steps // 2000)")
>>> e.names
('steps',)
>>> e.evaluate({"steps": 8000})
4
"""

from __future__ import annotations

import ast
import math
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

MAX_LENGTH = 1000
"""Longest expression accepted (deeply nested text could exhaust the parser's stack)."""
MAX_INT_POWER_BITS = 4096
"""``a ** b`` of two integers is exact while the result has at most this many bits;
beyond it the power is taken in float64 (so ``10 ** 10 ** 10`` overflows at once
instead of computing a number of ten billion digits)."""

_BINARY: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", None),          # _power: bounded integer powers
}


def _log(x, base=None):
    return math.log(x) if base is None else math.log(x, base)


# name -> (function, smallest and largest number of arguments; None: no upper bound)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "min": (min, 2, None),
    "max": (max, 2, None),
    "round": (round, 1, 2),
    "int": (int, 1, 1),
    "float": (float, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (_log, 1, 2),
    "exp": (math.exp, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "floor": (math.floor, 1, 1),
}


class ExpressionError(ValueError):
    """A refused or failed expression (the message is one line)."""


def _power(a, b):
    if isinstance(a, int) and isinstance(b, int) and b >= 0:
        if a in (-1, 0, 1) or abs(a).bit_length() * b <= MAX_INT_POWER_BITS:
            return a ** b
    result = float(a) ** float(b)        # raises OverflowError when too large
    if isinstance(result, complex):
        raise ValueError("not a real number")
    return result


def _check(node: ast.AST, names: frozenset[str] | None, used: list[str]) -> None:
    """Refuse any node outside the grammar of the module docstring."""
    if isinstance(node, ast.Expression):
        _check(node.body, names, used)
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r}")
    elif isinstance(node, ast.Name):
        if node.id in FUNCTIONS:
            raise ExpressionError(f"{node.id} is a function: call it, e.g. {node.id}(...)")
        if names is not None and node.id not in names:
            raise ExpressionError(f"unknown name {node.id!r}")
        if node.id not in used:
            used.append(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed "
                                  "(allowed: + - * / // ** %)")
        _check(node.left, names, used)
        _check(node.right, names, used)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub):
            raise ExpressionError(f"unary {type(node.op).__name__} is not allowed (only unary minus)")
        _check(node.operand, names, used)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"call of {shown!r} is not allowed (functions: "
                                  f"{', '.join(FUNCTIONS)})")
        name = node.func.id
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(f"{name}() takes plain positional arguments only")
        _, lo, hi = FUNCTIONS[name]
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} or {hi}")
            raise ExpressionError(f"{name}() takes {want} argument(s), got {len(node.args)}")
        for arg in node.args:
            _check(arg, names, used)
    else:
        kind = type(node).__name__
        text = ast.unparse(node) if hasattr(ast, "unparse") else kind
        raise ExpressionError(f"{text!r} is not allowed ({kind}); use numbers, names, "
                              "+ - * / // ** %, unary minus and "
                              f"{', '.join(FUNCTIONS)}")


def _eval(node: ast.AST, values: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, values)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, values), _eval(node.right, values)
        symbol, op = _BINARY[type(node.op)]
        try:
            return _power(left, right) if op is None else op(left, right)
        except ZeroDivisionError:
            raise ExpressionError(f"division by zero in {ast.unparse(node)}") from None
        except OverflowError:
            raise ExpressionError(f"overflow in {ast.unparse(node)}") from None
        except ValueError as exc:
            raise ExpressionError(f"{exc} in {ast.unparse(node)}") from None
    if isinstance(node, ast.UnaryOp):
        return -_eval(node.operand, values)
    if isinstance(node, ast.Call):
        name = node.func.id
        args = [_eval(a, values) for a in node.args]
        try:
            return FUNCTIONS[name][0](*args)
        except (ValueError, OverflowError, TypeError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ExpressionError(f"{ast.unparse(node)}: {message}") from None
    raise AssertionError(f"unchecked node {type(node).__name__}")   # pragma: no cover


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; :meth:`evaluate` computes it from named numbers."""

    text: str
    tree: ast.Expression
    names: tuple[str, ...]
    """The names it reads, in order of first appearance."""

    @classmethod
    def parse(cls, text: str, names: frozenset[str] | set[str] | None = None) -> "Expression":
        """Parse and check ``text``; ``names`` (optional) are the only names allowed.

        Raises
        ------
        ExpressionError
            One line: a syntax error, a construct outside the grammar, an unknown name.
        """
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("empty expression")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            where = f" at column {exc.offset}" if exc.offset else ""
            raise ExpressionError(f"syntax error{where}: {exc.msg}") from None
        except (ValueError, RecursionError, MemoryError) as exc:   # e.g. a 5000-digit literal
            message = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
            raise ExpressionError(f"cannot parse: {message}") from None
        used: list[str] = []
        try:
            _check(tree, frozenset(names) if names is not None else None, used)
        except RecursionError:
            raise ExpressionError("cannot parse: nested too deeply") from None
        return cls(text.strip(), tree, tuple(used))

    def evaluate(self, values: Mapping[str, Any]) -> int | float:
        """The value of the expression with ``values[name]`` for each name.

        Raises
        ------
        ExpressionError
            One line: a name without a number, division by zero, a math domain error,
            an overflow, or a result that is not a finite real number.
        """
        for name in self.names:
            if name not in values:
                raise ExpressionError(f"unknown name {name!r}")
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ExpressionError(f"{name} is {value!r} here, not a number")
        numbers_only = {k: (float(values[k]) if not isinstance(values[k], int) else values[k])
                        for k in self.names}
        try:
            result = _eval(self.tree, numbers_only)
        except RecursionError:
            raise ExpressionError("nested too deeply to evaluate") from None
        if isinstance(result, complex) or (isinstance(result, float) and not math.isfinite(result)):
            raise ExpressionError(f"the result {result!r} is not a finite real number")
        return result

    def __str__(self) -> str:
        return self.text
