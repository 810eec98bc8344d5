from __future__ import annotations

import ibis

from crmseg.sources.normalize import blank, trimmed

VALUES = ["", " ", "\t\n", " \r\x0b\x0c ", " a", "a ", "a", "\u00a0", "\x01", "\x01 "]


def test_blank_is_strip_of_ascii_whitespace_equals_empty() -> None:
    con = ibis.duckdb.connect()
    t = ibis.memtable({"i": list(range(len(VALUES) + 1)), "x": [*VALUES, None]})
    got = con.to_pyarrow(t.select("i", b=blank(t.x)).order_by("i")).column("b").to_pylist()
    expected = [v.strip(" \t\n\r\x0b\x0c") == "" for v in VALUES] + [False]
    assert got == expected
    assert expected[:4] == [True] * 4 and not any(expected[4:])


def test_trimmed_is_strip() -> None:
    values = [*VALUES, "\ta b\n", "  x\u00a0 ", "é ", " é", "\u00a0x\u00a0"]
    con = ibis.duckdb.connect()
    t = ibis.memtable({"i": list(range(len(values) + 1)), "x": [*values, None]})
    got = con.to_pyarrow(t.select("i", a=trimmed(t.x), b=t.x.strip()).order_by("i"))
    assert got.column("a").to_pylist() == got.column("b").to_pylist()
    assert got.column("a").to_pylist()[4:7] == ["a", "a", "a"]


def test_phone_book_answers_a_repeated_lookup_from_its_memo() -> None:
    import pyarrow as pa

    from crmseg.sources import phones as phone_module
    from crmseg.sources.normalize import PhoneBook

    phones = pa.array(["+49 151 2345678", "0151 2345678", "0151 2345678", "12", "a\x1fb"])
    countries = pa.array([None, "DE", "AT", "DE", None])
    book = PhoneBook("DE")
    first = book.arrays(phones, countries)
    # a subset in another order (identity after quality) is taken from the memo
    order = pa.array([4, 2, 0, 1])
    calls: list[int] = []
    real = phone_module.international

    def counted(values):  # type: ignore[no-untyped-def]
        calls.append(len(values))
        return real(values)

    phone_module.international = counted
    try:
        again = book.arrays(phones.take(order), countries.take(order))
        fresh = PhoneBook("DE").arrays(phones.take(order), countries.take(order))
    finally:
        phone_module.international = real
    assert [a.to_pylist() for a in again] == [a.to_pylist() for a in fresh]
    assert [a.to_pylist() for a in again] == [a.take(order).to_pylist() for a in first]
    assert calls == [4]  # only the fresh book parsed anything
    assert first[0].to_pylist()[:3] == ["+491512345678", "+491512345678", "+431512345678"]
