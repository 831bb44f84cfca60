"""Safe arithmetic over config keys: the ``${df.expr:EXPRESSION}`` interpolation.

An expression is parsed with :mod:`ast` and checked against an allow-list of node types:
numbers, key names (``width``, ``hyperparameters.width``), ``+ - * / // % **``, unary ``-``
and ``+``, parentheses and calls of :data:`FUNCTIONS`. Nothing is ever ``eval``-ed. Integers
stay integers where Python's operators keep them so (``4 * 16`` is ``64``, ``64 / 4`` is
``16.0``), and every step is bounded: integers of at most :data:`MAX_INT_BITS` bits, finite
real floats, no ``10 ** 10 ** 10``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detflow._core.errors import ConfigError

__all__ = [
    "EXPR_RESOLVER_NAME",
    "FUNCTIONS",
    "Expression",
    "ExpressionError",
    "derived",
    "expression_text",
    "parse_expression",
]

EXPR_RESOLVER_NAME = "df.expr"

#: The longest expression accepted, in characters.
MAX_LENGTH = 1000
#: The deepest nesting of operators and calls accepted.
MAX_DEPTH = 50
#: The largest integer (in bits) any step of an expression may produce.
MAX_INT_BITS = 256
#: The largest number of digits ``round(x, n)`` may round to.
MAX_ROUND_DIGITS = 400

Number = int | float


def _round(x: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(x)
    if not isinstance(digits, int):
        raise TypeError("round's second argument must be an integer")
    if abs(digits) > MAX_ROUND_DIGITS:
        raise OverflowError(f"round to at most {MAX_ROUND_DIGITS} digits")
    return round(x, digits)


def _min(*args: Number) -> Number:
    return min(args)


def _max(*args: Number) -> Number:
    return max(args)


#: name -> (function, fewest arguments, most arguments)
FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int]] = {
    "min": (_min, 2, 64),
    "max": (_max, 2, 64),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "int": (int, 1, 1),
    "float": (float, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "floor": (math.floor, 1, 1),
    "sqrt": (math.sqrt, 1, 1),
    "log": (math.log, 1, 2),
    "log2": (math.log2, 1, 1),
    "exp": (math.exp, 1, 1),
}

_OPERATORS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
}

GRAMMAR = f"arithmetic of numbers and keys (+ - * / // % **, {' '.join(FUNCTIONS)})"


class ExpressionError(ValueError):
    """A part of an expression refused: ``part`` is its text, ``why`` says why."""

    def __init__(self, part: str, why: str) -> None:
        self.part, self.why = part, why
        super().__init__(f"{part!r}: {why}" if part else why)

    def __reduce__(self) -> tuple[type[ExpressionError], tuple[str, str]]:
        return (type(self), (self.part, self.why))


@dataclass(frozen=True)
class Expression:
    """A checked expression: its text, its tree and the keys it reads, in order.

    >>> e = parse_expression("4 * hyperparameters.width + depth")
    >>> e.names
    ('hyperparameters.width', 'depth')
    >>> e.evaluate({"hyperparameters.width": 16, "depth": 2})
    66
    """

    text: str
    tree: ast.expr
    names: tuple[str, ...]

    def spans(self) -> list[tuple[int, int, str]]:
        """``(start, end, name)`` of each key name in :attr:`text`, left to right.

        >>> parse_expression("4 * hyperparameters.width + w").spans()
        [(4, 25, 'hyperparameters.width'), (28, 29, 'w')]
        """
        found: list[tuple[int, int, str]] = []
        pending: list[ast.AST] = [self.tree]
        while pending:
            node = pending.pop()
            name = dotted_name(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if name is not None and node.end_col_offset is not None:  # type: ignore[attr-defined]
                found.append((node.col_offset, node.end_col_offset, name))  # type: ignore[attr-defined]
                continue
            children = list(ast.iter_child_nodes(node))
            if isinstance(node, ast.Call):
                children = list(node.args)  # the function's name is no key
            pending.extend(children)
        return sorted(found)

    def evaluate(self, values: Mapping[str, Any] | Callable[[str], Any]) -> Number:
        """The value, reading each key from ``values`` (a mapping or a function of the key)."""
        lookup = values.__getitem__ if isinstance(values, Mapping) else values
        return _evaluate(self.tree, self.text, lookup)


def parse_expression(text: object) -> Expression:
    """Parse and check ``text``; an :class:`ExpressionError` names the part refused.

    >>> parse_expression("__import__('os')")
    Traceback (most recent call last):
    ...
    detflow._core.expr.ExpressionError: "__import__('os')": a call of __import__, ...
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ExpressionError(repr(text), "not an expression (a string)")
    source = text if isinstance(text, str) else repr(text)
    if len(source) > MAX_LENGTH:
        raise ExpressionError(source[:40] + "...", f"longer than {MAX_LENGTH} characters")
    if not source.strip():
        raise ExpressionError(source, "empty")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        why = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ExpressionError(source, f"not an arithmetic expression ({why})") from None
    except (RecursionError, MemoryError):
        raise ExpressionError(source[:40], "nested too deeply") from None
    names: list[str] = []
    _check(tree.body, source.strip(), names, 0)
    return Expression(source.strip(), tree.body, tuple(dict.fromkeys(names)))


def _part(node: ast.AST, source: str) -> str:
    return ast.get_source_segment(source, node) or ast.dump(node)


def dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name; ``None`` for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _check(node: ast.AST, source: str, names: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExpressionError(_part(node, source), f"nested deeper than {MAX_DEPTH}")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "a string" if isinstance(value, (str, bytes)) else f"a {type(value).__name__}"
            raise ExpressionError(_part(node, source), f"{kind}, not a number")
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise ExpressionError(_part(node, source), f"an integer over {MAX_INT_BITS} bits")
        return
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node)
        if name is None:
            raise ExpressionError(_part(node, source), "attribute access, not a key name")
        if any(part.startswith("__") for part in name.split(".")):
            raise ExpressionError(name, "a dunder name, not a key name")
        if not isinstance(node.ctx, ast.Load):  # pragma: no cover - eval mode only loads
            raise ExpressionError(name, "not a key read")
        names.append(name)
        return
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _OPERATORS:
            op = type(node.op).__name__
            raise ExpressionError(_part(node, source), f"operator {op} is not arithmetic here")
        _check(node.left, source, names, depth + 1)
        _check(node.right, source, names, depth + 1)
        return
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            op = type(node.op).__name__
            raise ExpressionError(_part(node, source), f"operator {op} is not arithmetic here")
        _check(node.operand, source, names, depth + 1)
        return
    if isinstance(node, ast.Call):
        func = dotted_name(node.func)
        if not isinstance(node.func, ast.Name) or func not in FUNCTIONS:
            called = func if func is not None else _part(node.func, source)
            raise ExpressionError(
                _part(node, source), f"a call of {called}, not one of the functions"
            )
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise ExpressionError(_part(node, source), "keyword or starred arguments")
        _, fewest, most = FUNCTIONS[func]
        if not fewest <= len(node.args) <= most:
            count = str(fewest) if fewest == most else f"{fewest} to {most}"
            raise ExpressionError(_part(node, source), f"{func} takes {count} arguments")
        for arg in node.args:
            _check(arg, source, names, depth + 1)
        return
    kinds = {
        ast.Subscript: "a subscript",
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a comprehension",
        ast.JoinedStr: "a string",
        ast.Compare: "a comparison",
        ast.BoolOp: "a boolean operator",
        ast.IfExp: "a conditional",
        ast.NamedExpr: "an assignment",
    }
    kind = kinds.get(type(node), f"{type(node).__name__} syntax")
    raise ExpressionError(_part(node, source), f"{kind}, not arithmetic")


def _number(value: Any, part: str) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(part, f"is {value!r}, not a number")
    return _bounded(value, part)


def _bounded(value: Any, part: str) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(part, f"gives {value!r}, not a real number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(part, f"gives an integer over {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(part, f"gives {value}, not a finite number")
    return value


def _power(base: Number, exponent: Number, part: str) -> Number:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = exponent * (abs(base).bit_length() - 1)  # at most the result's bits
        if bits > MAX_INT_BITS:
            raise ExpressionError(part, f"gives an integer over {MAX_INT_BITS} bits")
    return base**exponent


def _apply(op: str, left: Number, right: Number, part: str) -> Any:
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    if op == "/":
        return left / right
    if op == "//":
        return left // right
    if op == "%":
        return left % right
    return _power(left, right, part)


def _evaluate(node: ast.expr, source: str, lookup: Callable[[str], Any]) -> Number:
    part = _part(node, source)
    if isinstance(node, ast.Constant):
        return _number(node.value, part)
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node)
        assert name is not None
        return _number(lookup(name), name)
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, source, lookup)
        right = _evaluate(node.right, source, lookup)
        op = _OPERATORS[type(node.op)]
        return _bounded(_arithmetic(part, _apply, op, left, right, part), part)
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, source, lookup)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        args = [_evaluate(a, source, lookup) for a in node.args]
        function = FUNCTIONS[node.func.id][0]
        return _bounded(_arithmetic(part, function, *args), part)
    raise ExpressionError(part, "not arithmetic")  # pragma: no cover - _check refused it


def _arithmetic(part: str, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, its arithmetic errors as an :class:`ExpressionError` naming
    ``part``."""
    try:
        return function(*args)
    except ExpressionError:
        raise
    except ZeroDivisionError:
        raise ExpressionError(part, "divides by zero") from None
    except OverflowError:
        raise ExpressionError(part, "overflows") from None
    except (ValueError, TypeError) as exc:
        raise ExpressionError(part, f"is not defined ({exc})") from None


_INTERPOLATION = re.compile(
    r"^\$\{\s*" + re.escape(EXPR_RESOLVER_NAME) + r"\s*:(?P<body>.*)\}$", re.DOTALL
)


def expression_text(value: object) -> str | None:
    """The EXPRESSION of a ``${df.expr:EXPRESSION}`` value (unquoted); ``None`` otherwise.

    >>> expression_text("${df.expr:4 * width}"), expression_text("${df.expr:'min(a, 2)'}")
    ('4 * width', 'min(a, 2)')
    """
    match = _INTERPOLATION.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    body = match.group("body").strip()
    if len(body) >= 2 and body[0] == body[-1] and body[0] in "'\"":
        body = re.sub(r"\\(.)", r"\1", body[1:-1])
    return body


def derived(expression: str) -> str:
    """The interpolation that computes ``expression`` from other keys, for a dataclass
    field, a dict or YAML (the value follows every override of the keys it reads).

    Examples
    --------
    >>> derived("4 * width")
    '${df.expr:4 * width}'
    >>> derived("min(width, 64) // 2")
    "${df.expr:'min(width, 64) // 2'}"
    """
    if not isinstance(expression, str):
        raise ConfigError("expression", expression, "an expression string such as '4 * width'")
    parse_expression(expression)  # refuse it now, where it is written
    return interpolation(expression)


#: Characters OmegaConf's grammar takes unquoted in a resolver argument (with letters,
#: digits and spaces).
_UNQUOTED = set("_/-+.%*@?|")


def interpolation(expression: str) -> str:
    """``${df.expr:EXPRESSION}``, quoted where OmegaConf's grammar needs it."""
    text = expression.strip()
    plain = all(c.isascii() and (c.isalnum() or c == " " or c in _UNQUOTED) for c in text)
    if plain and text:
        return f"${{{EXPR_RESOLVER_NAME}:{text}}}"
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"${{{EXPR_RESOLVER_NAME}:'{escaped}'}}"
