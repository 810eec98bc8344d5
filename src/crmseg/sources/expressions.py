"""Column mappings that compute: ``amount: "price + freight_value"``.

The text is parsed with sqlglot and translated node by node into an Ibis expression over the
source's columns, so only arithmetic, literals, column references and a few functions can
appear, and the SQL that runs is Ibis's, not the user's text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ibis.expr.types as ir

SUPPORTED = "+ - * /, numbers, 'text', columns, coalesce, round, abs, lower, upper, trim, ||"


def is_expression(text: str) -> bool:
    """Whether a mapping is meant as an expression rather than one column's name."""
    import sqlglot
    from sqlglot import exp

    try:
        node = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError:
        return any(c in text for c in "+-*/|")  # meant as arithmetic: say why it does not parse
    # "Customer ID" parses as a column with an alias: a name with a space, not arithmetic;
    # "price + * freight_value" parses as an aliased sum: a broken expression
    if isinstance(node, exp.Alias):
        return not isinstance(node.this, exp.Column)
    return not isinstance(node, exp.Column | exp.Identifier)


def compile_mapping(text: str, table: ir.Table, read: Callable[[str], Any] | None = None) -> Any:
    """The Ibis value of a mapping expression over ``table``; ValueError says what is wrong.
    ``read`` gives the value of a column the expression reads (default: as it is)."""
    import ibis
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError as e:
        raise ValueError(f"cannot parse {text!r}: {str(e).splitlines()[0]}") from None
    # sqlglot reads "price + * x" as (price + *) AS x: neither is a mapping
    star = next(tree.find_all(exp.Star), None)
    if star is not None:
        raise ValueError(f"cannot parse {text!r}: '*' needs a value on each side")
    alias = next(tree.find_all(exp.Alias), None)
    if alias is not None:
        raise ValueError(
            f"cannot parse {text!r}: no operator between {alias.this.sql()!r} and {alias.alias!r}"
        )
    binary: dict[type[Any], Callable[[Any, Any], Any]] = {
        exp.Add: lambda a, b: a + b,
        exp.Sub: lambda a, b: a - b,
        exp.Mul: lambda a, b: a * b,
        exp.Div: lambda a, b: a / b,
        exp.DPipe: lambda a, b: a.cast("string").concat(b.cast("string")),
    }
    unary: dict[type[Any], Callable[[Any], Any]] = {
        exp.Neg: lambda a: -a,
        exp.Abs: lambda a: a.abs(),
        exp.Lower: lambda a: a.cast("string").lower(),
        exp.Upper: lambda a: a.cast("string").upper(),
        exp.Trim: lambda a: a.cast("string").strip(),
    }

    def typed(node: Any, make: Callable[..., Any], *args: Any) -> Any:
        try:
            return make(*args)
        except (TypeError, AttributeError):  # ibis refuses e.g. text - number
            kinds = " and ".join(str(a.type()) for a in args)
            want = "values of one type" if isinstance(node, exp.Coalesce) else "numbers"
            raise ValueError(
                f"cannot compute {node.sql()!r}: expected {want}, got {kinds}"
            ) from None

    def value(node: Any) -> Any:
        if isinstance(node, exp.Paren):
            return value(node.this)
        if isinstance(node, exp.Column):
            name = node.name
            if name not in table.columns:
                raise ValueError(
                    f"no column {name!r} in {text!r} (found: {', '.join(table.columns)})"
                )
            return read(name) if read is not None else table[name]
        if isinstance(node, exp.Literal):
            if node.is_string:
                return ibis.literal(node.this)
            number = float(node.this)
            return ibis.literal(int(number) if number.is_integer() else number)
        for kind, make in binary.items():
            if isinstance(node, kind):
                return typed(node, make, value(node.this), value(node.expression))
        for kind, one in unary.items():
            if isinstance(node, kind):
                return typed(node, one, value(node.this))
        if isinstance(node, exp.Coalesce):
            args = [value(node.this), *(value(e) for e in node.expressions)]
            return typed(node, ibis.coalesce, *args)
        if isinstance(node, exp.Round):
            digits = node.args.get("decimals")
            if digits is not None and not (isinstance(digits, exp.Literal) and digits.is_int):
                raise ValueError(f"{node.sql()!r} in {text!r}: the digits must be a whole number")
            places = int(digits.this) if digits is not None else 0
            return typed(node, lambda a: a.round(places), value(node.this))
        raise ValueError(f"{node.sql()!r} in {text!r} is not supported (supported: {SUPPORTED})")

    return value(tree)
