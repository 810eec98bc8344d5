"""The SQL each dialect gets: Ibis's compilers, with the few operations crmseg compiles its own
way. Backends execute with these compilers, and shown SQL comes from them, so what a user reads
is what runs."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import ibis.expr.types as ir


@cache
def compiler(dialect: str) -> Any:
    """The compiler for ``dialect`` (one instance per process)."""
    import ibis.backends.sql.compilers as sc

    if dialect == "postgres":
        return _postgres(sc)
    if dialect == "pyspark":
        import ibis

        _ = ibis.pyspark  # registers the options its compiler reads (treat_nan_as_null)
    if dialect == "sqlite":
        return _sqlite(sc)
    if dialect != "duckdb":
        return getattr(sc, dialect).compiler

    class DuckDB(type(sc.duckdb.compiler)):  # type: ignore[misc]
        # Ibis writes arg_min as first(arg ORDER BY key), an ordered aggregate: DuckDB keeps
        # every row of every group to sort them at the end, which cost 0.7 s of a 4.8 s scan
        # of 10M orders. arg_min_null is one state per group and, like Spark's min_by, skips
        # rows without a key (first() would take one of them when no row has a key).
        def visit_ArgMin(self, op: Any, *, arg: Any, key: Any, where: Any) -> Any:
            return self.agg.arg_min_null(arg, key, where=where)

        def visit_ArgMax(self, op: Any, *, arg: Any, key: Any, where: Any) -> Any:
            return self.agg.arg_max_null(arg, key, where=where)

    return DuckDB()


def _sqlite(sc: Any) -> Any:
    import sqlglot.expressions as sge
    from ibis.common.exceptions import UnsupportedOperationError

    class SQLite(type(sc.sqlite.compiler)):  # type: ignore[misc]
        # Ibis reads arg_min from a bare column beside min(), which SQLite takes from the row
        # of the query's last min() or max(): with another one in the same query the value
        # came from the wrong row. Here the key and the value travel together as a JSON
        # pair whose text orders as the key does, and the least (greatest) pair wins.
        def _pair(self, func: str, op: Any, *, arg: Any, key: Any, where: Any) -> Any:
            kind = op.key.dtype
            if kind.is_string() or kind.is_temporal():
                # the bytes in hex: byte order (ISO time is text), whatever JSON escapes
                sortable = self.f.hex(key)
            elif kind.is_integer() or kind.is_boolean():  # fixed width, never negative
                shifted = sge.Add(this=key, expression=sge.Literal.number(2**62))
                sortable = self.f.printf(sge.Literal.string("%019d"), shifted)
            else:
                raise UnsupportedOperationError(
                    f"'{type(op).__name__}' operation over a {kind} key"
                )
            value = arg
            if op.arg.dtype.is_floating():  # JSON keeps 15 digits; text keeps all 17
                text = self.f.printf(sge.Literal.string("%!.17g"), arg)
                value = self.if_(sge.Is(this=arg, expression=sge.Null()), sge.Null(), text)
            keep: Any = sge.Not(this=sge.Is(this=key, expression=sge.Null()))
            if where is not None:
                keep = sge.and_(keep, where)
            pair = self.if_(keep, self.f.json_array(sortable, value), sge.Null())
            best = self.agg[func](pair)
            out = self.f.anon.json_extract(best, sge.Literal.string("$[1]"))
            if op.arg.dtype.is_floating():
                return sge.Cast(this=out, to=sge.DataType.build("REAL"))
            return out

        def visit_ArgMin(self, op: Any, *, arg: Any, key: Any, where: Any) -> Any:
            return self._pair("min", op, arg=arg, key=key, where=where)

        def visit_ArgMax(self, op: Any, *, arg: Any, key: Any, where: Any) -> Any:
            return self._pair("max", op, arg=arg, key=key, where=where)

    return SQLite()


def to_sql(expr: ir.Expr, dialect: str) -> str:
    """``expr`` as ``dialect`` SQL, as the backend of that dialect runs it."""
    c = compiler(dialect)
    out = c.to_sqlglot(expr.unbind())
    queries = out if isinstance(out, list) else [out]
    return ";\n".join(q.sql(dialect=c.dialect, pretty=True) for q in queries)


# What a text must look like for a cast to a type not to fail (Postgres has no TRY_CAST;
# pg_input_is_valid arrives only in 16). Dates are checked further against month lengths.
_NUMBER = r"^\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_INTEGER = r"^\s*[-+]?[0-9]{1,18}\s*$"
_BOOLEAN = r"^\s*(?i:t|f|true|false|y|n|yes|no|on|off|1|0)\s*$"
_DATE = r"^\s*[0-9]{4}-(0?[1-9]|1[0-2])-(0?[1-9]|[12][0-9]|3[01])"
_CLOCK = r"([ T]([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?)?\s*$"


def _postgres(sc: Any) -> Any:
    import sqlglot.expressions as sge

    def matches(arg: Any, pattern: str) -> Any:
        return sge.RegexpLike(this=arg, expression=sge.Literal.string(pattern))

    def fits_month(text: Any) -> Any:
        """The day of a ``YYYY-M-D...`` text is within its month's length."""
        parts = [
            sge.Cast(
                this=sge.func("split_part", sge.func("split_part", sge.func("btrim", text),
                              sge.Literal.string(" "), sge.Literal.number(1)),
                              sge.Literal.string("-"), sge.Literal.number(i)),
                to=sge.DataType.build("INT"),
            )
            for i in (1, 2, 3)
        ]  # fmt: skip
        first = sge.func("make_date", parts[0], parts[1], sge.Literal.number(1))
        last = sge.Sub(
            this=sge.Add(this=first, expression=sge.Interval(this=sge.Literal.string("1 month"))),
            expression=sge.Interval(this=sge.Literal.string("1 day")),
        )
        return sge.LTE(this=parts[2], expression=sge.Extract(this=sge.var("day"), expression=last))

    import ibis.expr.operations as ops

    base = type(sc.postgres.compiler)

    class Postgres(base):  # type: ignore[misc,valid-type]
        # Ibis writes arbitrary() as first(), which Postgres lacks (visit_Arbitrary below)
        SIMPLE_OPS: ClassVar[dict[Any, str]] = {
            k: v for k, v in base.SIMPLE_OPS.items() if k is not ops.Arbitrary
        }

        def visit_TryCast(self, op: Any, *, arg: Any, to: Any) -> Any:
            """A cast that gives null instead of failing, for text: the text is checked
            against the form the target type reads first (CASE evaluates in order)."""
            if not op.arg.dtype.is_string():
                return self.visit_Cast(op, arg=arg, to=to)
            cast = self.visit_Cast(op, arg=sge.func("btrim", arg), to=to)
            if to.is_integer():
                ok = matches(arg, _INTEGER)
            elif to.is_floating() or to.is_decimal():
                ok = matches(arg, _NUMBER)
            elif to.is_boolean():
                ok = matches(arg, _BOOLEAN)
            elif to.is_date():
                ok = sge.and_(matches(arg, _DATE + r"\s*$"), fits_month(arg))
            elif to.is_timestamp() and to.timezone is None:
                ok = sge.and_(matches(arg, _DATE + _CLOCK), fits_month(arg))
            else:
                return cast
            inner = sge.If(this=ok, true=sge.true())
            checked = sge.Case(ifs=[inner], default=sge.false())
            return sge.Case(ifs=[sge.If(this=checked, true=cast)], default=sge.null())

        def visit_Arbitrary(self, op: Any, *, arg: Any, where: Any, **_: Any) -> Any:
            # Ibis writes first(), which Postgres lacks; any value will do
            return self.agg.min(arg, where=where)

        def visit_Cast(self, op: Any, *, arg: Any, to: Any) -> Any:
            # Postgres casts boolean to int4 but not to int8 or floats: go through int4
            if op.arg.dtype.is_boolean() and (to.is_integer() or to.is_floating()):
                arg = sge.Cast(this=arg, to=sge.DataType.build("INT"))
            return super().visit_Cast(op, arg=arg, to=to)

        def visit_Round(self, op: Any, *, arg: Any, digits: Any) -> Any:
            # round() of a double is rint() in Postgres (2.5 -> 2); numeric rounds half
            # away from zero like DuckDB and Spark (2.5 -> 3)
            if op.arg.dtype.is_floating() and op.dtype.is_integer():  # Ibis casts the others
                arg = sge.Cast(this=arg, to=sge.DataType.build("DECIMAL"))
            return super().visit_Round(op, arg=arg, digits=digits)

    return Postgres()
