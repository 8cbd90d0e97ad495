"""Derived sweep fields (``--derive FIELD=EXPRESSION``) and their safe expressions."""

import math

import pytest

from simulator import SimulationConfig
from workflows.expressions import Expression, ExpressionError
from workflows.sweep import SweepError, expand, main

BASE = SimulationConfig(d=400, n=4, s=5, m_k=3, m_v=3, n_test=50, steps=120, sigma_0=0.05,
                        eta=2e-3)


@pytest.mark.parametrize("text, values, expected", [
    ("0.2/eta", {"eta": 5e-5}, 4000.0),
    ("max(1, steps//2000)", {"steps": 8000}, 4),
    ("max(1, steps//2000)", {"steps": 1000}, 1),
    ("min(3, s, 7)", {"s": 5}, 3),
    ("-s + 2*s**2 % 7", {"s": 5}, -5 + (2 * 25) % 7),
    ("2**10", {}, 1024),
    ("sqrt(s) * exp(0) + log(8, 2) + log(exp(1))", {"s": 16}, 4.0 + 3.0 + 1.0),
    ("ceil(2.1) + floor(2.9) + round(2.5) + int(3.7) + float(1)", {}, 3 + 2 + 2 + 3 + 1.0),
    ("0.005 * sqrt(20 / s)", {"s": 80}, 0.0025),
])
def test_good_expressions_compute_what_python_would(text, values, expected):
    assert Expression.parse(text).evaluate(values) == pytest.approx(expected, rel=1e-15)


def test_names_are_listed_in_order_of_first_use():
    assert Expression.parse("steps // (s + steps) + eta").names == ("steps", "s", "eta")


@pytest.mark.parametrize("text, message", [
    ("0.2/", "syntax error"),
    ("", "empty expression"),
    ("eta.real", "'eta.real' is not allowed (Attribute)"),
    ("__import__('os')", "call of '__import__' is not allowed"),
    ("eval('1')", "call of 'eval' is not allowed"),
    ("(1).__class__", "is not allowed (Attribute)"),
    ("[1][0]", "is not allowed (Subscript)"),
    ("eta if s else 1", "is not allowed (IfExp)"),
    ("eta < 1", "is not allowed (Compare)"),
    ("lambda: 1", "is not allowed (Lambda)"),
    ("'text'", "only numbers are allowed as constants"),
    ("True", "only numbers are allowed as constants"),
    ("+eta", "unary UAdd is not allowed"),
    ("~s", "unary Invert is not allowed"),
    ("s << 2", "operator LShift is not allowed"),
    ("max", "max is a function"),
    ("max(s)", "max() takes at least 2 argument(s), got 1"),
    ("sqrt(s, 2)", "sqrt() takes 1 argument(s), got 2"),
    ("round(s, ndigits=2)", "round() takes plain positional arguments only"),
    ("1" * 5000, "longer than 1000 characters"),
    ("(" * 400 + "1" + ")" * 400, "syntax error"),        # deeper than the parser allows
])
def test_bad_expressions_are_refused_when_parsed(text, message):
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]").replace("+", r"\+")):
        Expression.parse(text)


@pytest.mark.parametrize("text, values, message", [
    ("1/(s - 5)", {"s": 5}, r"division by zero in 1 / \(s - 5\)"),
    ("s // 0", {"s": 5}, "division by zero"),
    ("s % 0", {"s": 5}, "division by zero"),
    ("sqrt(-s)", {"s": 5}, r"sqrt\(-s\): math domain error"),
    ("log(s - 5)", {"s": 5}, "math domain error"),
    ("exp(1000)", {}, "math range error"),
    ("10 ** 10 ** 10", {}, "overflow"),
    ("(-1) ** 0.5", {}, "not a real number"),
    ("1e308 * 10", {}, "not a finite real number"),
    ("beta1 * 2", {"beta1": None}, "beta1 is None here, not a number"),
    ("t * 2", {}, "unknown name 't'"),
])
def test_failed_evaluations_are_one_line_errors(text, values, message):
    with pytest.raises(ExpressionError, match=message) as info:
        Expression.parse(text).evaluate(values)
    assert "\n" not in str(info.value)


def test_names_can_be_restricted_when_parsed():
    with pytest.raises(ExpressionError, match="unknown name 'etta'"):
        Expression.parse("0.2/etta", {"eta"})


# --- in the sweep -------------------------------------------------------------

def test_derived_fields_follow_the_grid_and_each_other():
    pts = expand(BASE, [{"eta": [1e-4, 5e-5, 3e-5]}],
                 derive=["steps=0.2/eta", "record_every=max(1,steps//2000)"])
    got = [(p.config.eta, p.config.steps, p.config.record_every) for p in pts]
    # 0.2/3e-5 = 6666.67: an integer field takes the nearest integer
    assert got == [(1e-4, 2000, 1), (5e-5, 4000, 2), (3e-5, 6667, 3)]
    assert pts[2].derived == (("steps", 6667), ("record_every", 3))
    assert isinstance(pts[2].config.steps, int)


def test_derived_fields_see_the_optimizers_overrides():
    pts = expand(BASE, [{"s": [4]}], optimizers=["signgd", "gd:eta=0.5"], derive=["steps=0.2/eta"])
    assert [(p.label, p.config.steps) for p in pts] == [("signgd", 100), ("gd:eta=0.5", 0)]


def test_a_float_field_gets_a_float():
    pt, = expand(BASE, [{"s": [20]}], derive=["sigma_0=0.005*sqrt(20/s)", "n_test=10*n"])
    assert pt.config.sigma_0 == 0.005 and isinstance(pt.config.sigma_0, float)
    assert pt.config.n_test == 40


@pytest.mark.parametrize("derive, message", [
    (["steps=0.2/etta"], "--derive steps=0.2/etta: unknown name 'etta' (not a config field)"),
    (["steps=0.2/"], "--derive steps=0.2/: syntax error"),
    (["steps=eta.real"], "--derive steps=eta.real: 'eta.real' is not allowed (Attribute)"),
    (["steps=open('x')"], "--derive steps=open('x'): call of 'open' is not allowed"),
    (["steps=1/(s-4)"], "--derive steps=1/(s-4): division by zero in 1 / (s - 4) at point (s=4)"),
    (["record_every=0*s"], "--derive record_every=0*s: record_every must be an integer between 1 "
                           "and 9007199254740992, got 0 at point (s=4)"),
    (["sigma_0=-s"], "--derive sigma_0=-s: sigma_0 must be finite and in (0, inf), got -4.0 at point (s=4)"),
    (["stepz=1"], "--derive stepz=1: unknown config field 'stepz'"),
    (["engine=1"], "--derive engine=1: engine is not a number field"),
    (["steps=optimizer"], "--derive steps=optimizer: optimizer is not a number field"),
    (["n_seeds=2"], "--derive n_seeds=2: n_seeds is set by --seeds, not derived"),
    (["s=3"], "--derive s=3: s is also set by the grid"),
    (["steps=1", "steps=2"], "--derive steps=2: steps is derived twice"),
    (["steps"], "--derive 'steps': expected FIELD=EXPRESSION"),
])
def test_bad_derived_fields_name_the_expression_and_the_field(derive, message):
    with pytest.raises(SweepError) as info:
        expand(BASE, [{"s": [4]}], derive=derive)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_the_command_line_refuses_a_bad_expression_in_one_line(tmp_path, capsys):
    code = main(["--grid", "eta=1e-3,0", "--derive", "steps=0.2/eta", "--out", str(tmp_path / "x"),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("python -m analysis sweep: error: ")
    assert not (tmp_path / "x").exists()


def test_a_derived_value_is_validated_by_the_config():
    with pytest.raises(SweepError, match=r"--derive s=d \+ 5: s must be an integer between 1 and 399"):
        expand(BASE, derive=["s=d + 5"])
    assert math.isclose(expand(BASE, derive=["eta=1/steps"])[0].config.eta, 1 / 120)
