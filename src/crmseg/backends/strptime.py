"""strptime formats on engines without DuckDB's ``try_strptime``: the format becomes one
regular expression and arithmetic on its groups, all in Ibis, so Postgres and Spark read a
``formats:`` column as DuckDB does (null where the text does not match or names no real
instant; tested against ``try_strptime`` on generated formats and values).

DuckDB's reading, kept here: numbers take one digit up to their width (``%Y`` up to 4,
``%f`` up to 6), and when two numbers touch (``%Y%m%d``) the first takes its full width;
a space in the format is one or more whitespace characters, and whitespace around the text
is ignored; month names and AM/PM are matched in any case, other letters exactly; ``%y``
is 2000-2068 for 00-68 and 1969-1999 for 69-99.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ibis.expr.types as ir

MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]  # fmt: skip
# directive -> (field, widest number); names and AM/PM are words
NUMBERS = {"Y": ("year", 4), "y": ("year2", 2), "m": ("month", 2), "d": ("day", 2),
           "H": ("hour", 2), "I": ("hour12", 2), "M": ("minute", 2), "S": ("second", 2),
           "f": ("micro", 6)}  # fmt: skip
WORDS = {"b": "month_abbr", "B": "month_name", "p": "ampm"}
SUPPORTED = "%Y %y %m %d %H %I %M %S %f %p %b %B %% (and %-m, %-d, ...)"


@dataclass(frozen=True)
class Parsed:
    regex: str
    fields: list[str]  # the field of each group, in order


def compile_format(fmt: str) -> Parsed:
    """The regular expression of ``fmt`` (it matches the whole text) and its groups' fields.
    Raises ValueError naming what is not supported."""
    parts: list[str] = []
    fields: list[str] = []
    i = 0
    tokens: list[tuple[str, str]] = []
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%":
            j = i + 1
            if j < len(fmt) and fmt[j] == "-":  # %-m: the same reading (one or two digits)
                j += 1
            if j >= len(fmt):
                raise ValueError("the format ends with a lone %")
            tokens.append(("directive", fmt[j]))
            i = j + 1
        elif ch.isspace():
            while i < len(fmt) and fmt[i].isspace():
                i += 1
            tokens.append(("space", " "))
        else:
            tokens.append(("literal", ch))
            i += 1
    if tokens and tokens[0][0] == "space":
        # DuckDB skips the text's leading whitespace and then finds none for the format's
        raise ValueError("the format starts with a space, which matches no text; remove it")
    for n, (kind, value) in enumerate(tokens):
        if kind == "space":
            parts.append(r"\s+")
        elif kind == "literal" or value == "%":
            parts.append(_literal("%" if kind == "directive" else value))
        elif value in NUMBERS:
            field, width = NUMBERS[value]
            after = tokens[n + 1] if n + 1 < len(tokens) else ("", "")
            touching = after[0] == "directive" and after[1] in NUMBERS
            # a number followed by another number takes its full width (DuckDB reads
            # greedily and never gives digits back)
            shape = f"[0-9]{{{width}}}" if touching else f"[0-9]{{1,{width}}}"
            parts.append(f"({shape})")
            fields.append(field)
        elif value in WORDS:
            field = WORDS[value]
            if value == "p":
                words = ["am", "pm"]
            elif value == "b":
                words = [m[:3] for m in MONTHS]
            else:
                words = MONTHS
            parts.append("(" + "|".join(_any_case(w) for w in words) + ")")
            fields.append(field)
        else:
            raise ValueError(f"%{value} is not supported (supported: {SUPPORTED})")
    have = set(fields)
    if not have & {"year", "year2"} or not have & {"month", "month_abbr", "month_name"}:
        raise ValueError("the format needs a year (%Y or %y) and a month (%m, %b or %B)")
    if "day" not in have:
        raise ValueError("the format needs a day (%d)")
    for what, group in (("year", {"year", "year2"}), ("month", {"month", "month_abbr",
                        "month_name"}), ("hour", {"hour", "hour12"})):  # fmt: skip
        if len(have & group) > 1:
            raise ValueError(f"the format names the {what} twice")
    if len(fields) != len(have):
        raise ValueError("the format names a field twice")
    if "ampm" in have and "hour12" not in have:
        raise ValueError("%p needs %I (the hour on a 12-hour clock)")
    return Parsed(r"^\s*" + "".join(parts) + r"\s*$", fields)


def _literal(ch: str) -> str:
    return "\\" + ch if ch in ".^$*+?()[]{}|\\" else ch


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" for c in word)


def parse(text: ir.StringValue, fmt: str) -> ir.TimestampValue:
    """``text`` read with ``fmt`` as a naive timestamp, null where it does not match."""
    import ibis

    parsed = compile_format(fmt)
    matched = text.re_search(parsed.regex)
    group = {f: text.re_extract(parsed.regex, i + 1) for i, f in enumerate(parsed.fields)}

    def number(field: str, default: int) -> Any:
        return group[field].cast("int64") if field in group else ibis.literal(default, "int64")

    if "year" in group:
        year = number("year", 1900)
    else:
        short = number("year2", 0)
        year = ibis.cases((short < 69, short + 2000), else_=short + 1900)
    if "month" in group:
        month = number("month", 1)
    else:
        name = group.get("month_abbr", group.get("month_name"))
        assert name is not None
        first3 = name.lower().substr(0, 3)
        month = ibis.cases(*((first3 == m[:3], k + 1) for k, m in enumerate(MONTHS)))
    day = number("day", 1)
    minute, second = number("minute", 0), number("second", 0)
    if "hour12" in group:
        hour12 = number("hour12", 0)
        if "ampm" in group:
            pm = group["ampm"].lower() == "pm"
            hour = hour12 % 12 + ibis.cases((pm, 12), else_=0)
            hour_ok = hour12.between(1, 12)
        else:  # DuckDB reads 1-12 as they are (12 is noon)
            hour, hour_ok = hour12, hour12.between(1, 12)
    else:
        hour = number("hour", 0)
        hour_ok = hour.between(0, 23)
    micro = group["micro"].rpad(6, "0") if "micro" in group else ibis.literal("000000")
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    last = ibis.cases(
        (month.isin([4, 6, 9, 11]), 30),
        (month == 2, ibis.cases((leap, 29), else_=28)),
        else_=31,
    )
    valid = (
        (year >= 1)
        & month.between(1, 12)
        & (day >= 1)
        & (day <= last)
        & hour_ok
        & minute.between(0, 59)
        & second.between(0, 59)
    )

    # written out and cast: every engine reads ISO text (Ibis builds timestamps from parts
    # on DuckDB and Postgres only)
    def two(v: Any) -> Any:
        return v.cast("string").lpad(2, "0")

    text_at = (
        year.cast("string").lpad(4, "0") + "-" + two(month) + "-" + two(day) + " " + two(hour)
        + ":" + two(minute) + ":" + two(second) + "." + micro
    )  # fmt: skip
    stamp = text_at.cast("timestamp")
    null = ibis.null("timestamp")
    # nested: the groups are numbers only where the text matched (engines may evaluate both
    # sides of an AND, never an untaken branch of a CASE)
    return ibis.cases((matched, ibis.cases((valid, stamp), else_=null)), else_=null)
