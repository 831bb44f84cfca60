"""``df.expr``'s safe arithmetic: it agrees with Python on its grammar and refuses the rest."""

from __future__ import annotations

import math
import pickle
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detflow import derived
from detflow._core.errors import ConfigError
from detflow._core.expr import (
    MAX_INT_BITS,
    ExpressionError,
    expression_text,
    parse_expression,
)

VALUES: dict[str, Any] = {"width": 16, "depth": 3, "lr": 0.05, "hyperparameters.width": 16}
NAMESPACE: dict[str, Any] = {
    "__builtins__": {},
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "int": int,
    "float": float,
    "ceil": math.ceil,
    "floor": math.floor,
    "sqrt": math.sqrt,
    "log": math.log,
    "log2": math.log2,
    "exp": math.exp,
    "width": 16,
    "depth": 3,
    "lr": 0.05,
    "hyperparameters": SimpleNamespace(width=16),
}

leaf = st.one_of(
    st.integers(-100, 100).map(str),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["width", "depth", "lr", "hyperparameters.width"]),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "//", "%"]), children)
    power = st.tuples(children, st.integers(-3, 3))
    one = st.sampled_from(["abs", "int", "float", "ceil", "floor", "sqrt", "log", "log2", "exp"])
    return st.one_of(
        binary.map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        power.map(lambda t: f"({t[0]}) ** {t[1]}"),
        children.map(lambda c: f"-({c})"),
        st.tuples(one, children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(["min", "max"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(children, st.integers(-3, 3)).map(lambda t: f"round({t[0]}, {t[1]})"),
        children.map(lambda c: f"round({c})"),
    )


expressions = st.recursive(leaf, _combine, max_leaves=12)


def _python(text: str) -> tuple[Any, BaseException | None]:
    try:
        # The reference is Python itself, on text the strategy above built from the grammar.
        return eval(text, dict(NAMESPACE)), None  # noqa: S307
    except (ArithmeticError, ValueError, TypeError) as exc:
        return None, exc


@given(expressions)
def test_df_expr_agrees_with_python_arithmetic(text: str) -> None:
    expected, failed = _python(text)
    try:
        value = parse_expression(text).evaluate(VALUES)
    except ExpressionError as exc:
        bounded = "bits" in exc.why  # a step beyond MAX_INT_BITS: refused, not computed
        unreal = failed is None and (
            isinstance(expected, complex)
            or (isinstance(expected, float) and not math.isfinite(expected))
            or (isinstance(expected, int) and expected.bit_length() > MAX_INT_BITS)
        )
        assert bounded or failed is not None or unreal, (text, expected, exc)
        return
    assert failed is None, (text, failed)
    assert type(value) is type(expected), (text, value, expected)
    assert value == expected, text


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4 * width", 64),
        ("width // 3", 5),
        ("width / 4", 4.0),
        ("width % 5", 1),
        ("2 ** depth", 8),
        ("2 ** -1", 0.5),
        ("-width + +depth", -13),
        ("(width + 1) * 2", 34),
        ("min(width, 4, depth)", 3),
        ("max(lr, 1)", 1),
        ("round(2.5)", 2),
        ("round(lr, 1)", 0.1),
        ("int(7.9) + ceil(0.1) + floor(-0.1)", 7),
        ("sqrt(16)", 4.0),
        ("log(8, 2) + log2(8) + exp(0)", 7.0),
        ("hyperparameters.width * 2", 32),
        ("1_000 * 2e-3", 2.0),
    ],
)
def test_integers_stay_integers_where_python_keeps_them(text: str, value: Any) -> None:
    result = parse_expression(text).evaluate(VALUES)
    assert result == value and type(result) is type(value)


REFUSED = [
    ("__import__('os')", "a call of __import__"),
    ("open('/etc/passwd')", "a call of open"),
    ("eval('1')", "a call of eval"),
    ("math.sqrt(4)", "a call of math.sqrt"),
    ("(1).real", "attribute access"),
    ("min(1, 2).real", "attribute access"),
    ("width.__class__", "a dunder name"),
    ("width[0]", "a subscript"),
    ("lambda: 1", "a lambda"),
    ("[x for x in width]", "a comprehension"),
    ("(x for x in width)", "a comprehension"),
    ("'abc'", "a string"),
    ("f'{width}'", "a string"),
    ("b'x'", "a string"),
    ("width < 3", "a comparison"),
    ("width and 3", "a boolean operator"),
    ("1 if width else 2", "a conditional"),
    ("(w := 3)", "an assignment"),
    ("width << 2", "operator LShift"),
    ("~width", "operator Invert"),
    ("True + 1", "a bool"),
    ("None", "a NoneType"),
    ("1j", "a complex"),
    ("[1, 2]", "List syntax"),
    ("min(*width)", "starred"),
    ("round(x=1)", "keyword"),
    ("min(1)", "min takes 2 to 64 arguments"),
    ("sqrt(1, 2)", "sqrt takes 1 arguments"),
    ("4 *", "not an arithmetic expression"),
    ("", "empty"),
]


@pytest.mark.parametrize(("text", "why"), REFUSED)
def test_everything_outside_the_grammar_is_refused_naming_the_part(text: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=None) as caught:
        parse_expression(text).evaluate(VALUES)
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)


@given(expressions, st.sampled_from([text for text, _ in REFUSED if text]))
def test_a_refused_part_anywhere_is_refused(allowed: str, refused: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(f"{allowed} + ({refused})").evaluate(VALUES)


@pytest.mark.parametrize(
    "text",
    ["10**10**10", "9**9**9**9", "2**1000", "(10**80)*(10**80)", "round(5, -10**18)"],
)
def test_huge_results_are_refused_at_once(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ExpressionError):
        parse_expression(text).evaluate({})
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1 / 0", "divides by zero"),
        ("width % 0", "divides by zero"),
        ("exp(1000)", "overflows"),
        ("1e308 * 10", "not a finite number"),
        ("sqrt(-1)", "is not defined"),
        ("log(0)", "is not defined"),
        ("(-8) ** 0.5", "not a real number"),
    ],
)
def test_arithmetic_errors_are_one_line_naming_the_part(text: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=None) as caught:
        parse_expression(text).evaluate(VALUES)
    assert why in caught.value.why


def test_deep_nesting_and_long_expressions_are_refused() -> None:
    with pytest.raises(ExpressionError):
        parse_expression("-" * 200 + "1")
    with pytest.raises(ExpressionError):
        parse_expression("(" * 300 + "1" + ")" * 300)
    with pytest.raises(ExpressionError, match="longer than"):
        parse_expression("1 + " * 400 + "1")


def test_a_value_that_is_not_a_number_is_named() -> None:
    expression = parse_expression("2 * width")
    for bad in ("abc", None, True, [1]):
        with pytest.raises(ExpressionError, match="not a number"):
            expression.evaluate({"width": bad})


def test_names_and_spans() -> None:
    expression = parse_expression("min(width, 2) * hyperparameters.width + width")
    assert expression.names == ("width", "hyperparameters.width")
    assert [name for _, _, name in expression.spans()] == [
        "width",
        "hyperparameters.width",
        "width",
    ]


def test_derived_writes_the_interpolation_and_refuses_bad_expressions() -> None:
    assert derived("4 * width") == "${df.expr:4 * width}"
    assert derived("min(width, 4)") == "${df.expr:'min(width, 4)'}"
    for text in ("4 * width", "min(width, 4)", "2 ** -depth"):
        assert expression_text(derived(text)) == text
    with pytest.raises(ExpressionError, match="a call of __import__"):
        derived("__import__('os')")
    with pytest.raises(ConfigError):
        derived(4)  # type: ignore[arg-type]


def test_errors_and_expressions_pickle() -> None:
    error = ExpressionError("a[0]", "a subscript, not arithmetic")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
    expression = pickle.loads(pickle.dumps(parse_expression("4 * width")))
    assert expression.evaluate(VALUES) == 64
