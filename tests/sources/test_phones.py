"""Phone normalisation: the fast path for plain spellings gives exactly what
``phonenumbers.parse`` gives, in every region, for real and random numbers."""

from __future__ import annotations

import random

import phonenumbers as pn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmseg.sources.normalize import PhoneBook, _parse_chunk
from crmseg.sources.phones import compact

REGIONS = sorted(pn.SUPPORTED_REGIONS)
E164 = pn.PhoneNumberFormat.E164


def reference(raw: str, region: str) -> tuple[str | None, bool]:
    """What crmseg computed before the fast path: phonenumbers.parse on the raw text."""
    try:
        number = pn.parse(raw, region)
    except pn.NumberParseException:
        return (None, False)
    possible = bool(pn.is_possible_number(number))
    text = pn.format_number(number, E164)
    if number.italian_leading_zero and not raw.strip().startswith("+"):
        meta = pn.PhoneMetadata.metadata_for_region(region)
        if meta is not None and meta.national_prefix:
            text = f"+{number.country_code}{number.national_number}"
            try:
                possible = bool(pn.is_possible_number(pn.parse(text, None)))
            except pn.NumberParseException:
                possible = False
    return (text, possible)


def _spellings() -> list[tuple[str, str]]:
    """Every region's example numbers of every type, written the ways people write them, in
    the home region and in another one; plus near misses (one digit more or less)."""
    rng = random.Random(7)
    out = []
    formats = (pn.PhoneNumberFormat.NATIONAL, pn.PhoneNumberFormat.INTERNATIONAL, E164)
    for region in REGIONS:
        for kind in (pn.PhoneNumberType.MOBILE, pn.PhoneNumberType.FIXED_LINE, None):
            example = (
                pn.example_number(region)
                if kind is None
                else pn.example_number_for_type(region, kind)
            )
            if example is None:
                continue
            for fmt in formats:
                text = pn.format_number(example, fmt)
                for variant in (text, text.replace(" ", "-"), text + "1", text[:-1]):
                    out.append((variant, region))
                    out.append((variant, rng.choice(REGIONS)))
    return out


def test_fast_path_equals_phonenumbers_for_every_region() -> None:
    cases = _spellings()
    assert len(cases) > 5000
    got = _parse_chunk(cases)
    wrong = [(c, g, reference(*c)) for c, g in zip(cases, got, strict=True) if g != reference(*c)]
    assert wrong == []


digits = st.text(alphabet="0123456789", min_size=1, max_size=18)
punct = st.sampled_from(["", " ", "-", ".", "/", "(", ")"])


@settings(max_examples=2000, deadline=None)
@given(
    lead=st.sampled_from(["", "+", "00", "011", "0", "+0", "(0)"]),
    parts=st.lists(st.tuples(punct, digits), min_size=1, max_size=4),
    region=st.sampled_from(REGIONS),
)
def test_fast_path_equals_phonenumbers_on_random_spellings(
    lead: str, parts: list[tuple[str, str]], region: str
) -> None:
    import pyarrow as pa

    raw = lead + "".join(p + d for p, d in parts)
    expected = reference(raw, region)
    assert _parse_chunk([(raw, region)]) == [expected], raw
    e164, possible = PhoneBook("DE").arrays(pa.array([raw]), pa.array([region]))
    assert (e164[0].as_py(), possible[0].as_py()) == expected, raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+33 6 12 34 56 78", "+33612345678"),
        ("(06) 123-45.67", "061234567"),
        (" +49151 2345 ", "+491512345"),
        ("0049 151", "0049151"),
        ("12", None),  # too short to read like phonenumbers does
        ("+1 (800) FLOWERS", None),  # letters: parse itself
        ("0151 1234567 ext. 12", None),
    ],
)
def test_compact_forms(raw: str, expected: str | None) -> None:
    assert compact(raw) == expected


def test_phonebook_normalises_each_distinct_value_once() -> None:
    book = PhoneBook("DE")
    first = book.normalise([("0151 23456789", "DE"), ("+49 151 23456789", None)])
    assert first == [("+4915123456789", True), ("+4915123456789", True)]
    assert len(book._cache) == 2
    book.normalise([("0151 23456789", "DE")] * 5)
    assert len(book._cache) == 2


def test_whole_columns_equal_value_by_value() -> None:
    import pyarrow as pa

    extra: list[tuple[str | None, str]] = [("+0049 151", "DE"), ("+33 (0)6 12", "FR"), (None, "DE")]
    cases = [*_spellings()[:4000], *extra]
    raw = pa.array([c[0] for c in cases], pa.string())
    regions = pa.array([c[1] for c in cases], pa.string())
    e164, possible = PhoneBook("DE").arrays(raw, regions)
    expected = [reference(r, g) if r is not None else (None, False) for r, g in cases]
    assert list(zip(e164.to_pylist(), possible.to_pylist(), strict=True)) == expected


def test_national_spellings_are_read_on_whole_columns() -> None:
    """Every region's numbers written nationally, read in their region: the column path
    decides almost all of them (the per-value cache stays small), exactly as parse does."""
    import pyarrow as pa

    cases = []
    for region in REGIONS:
        for kind in (pn.PhoneNumberType.MOBILE, pn.PhoneNumberType.FIXED_LINE):
            example = pn.example_number_for_type(region, kind)
            if example is not None:
                text = pn.format_number(example, pn.PhoneNumberFormat.NATIONAL)
                cases += [(text, region), (text.replace(" ", ""), f" {region.lower()} ")]
    book = PhoneBook("DE")
    e164, possible = book.arrays(pa.array([c[0] for c in cases]), pa.array([c[1] for c in cases]))
    expected = [reference(raw, region.strip().upper()) for raw, region in cases]
    assert list(zip(e164.to_pylist(), possible.to_pylist(), strict=True)) == expected
    assert len(book._cache) < len(cases) / 4, len(book._cache)


def test_random_national_digits_in_every_region_equal_phonenumbers() -> None:
    """Random digits behind each region's national prefix and other common leads, read as
    whole columns: where both the number and its stripped form fit the region's plan, where
    lengths are borderline, where a calling code or dialling prefix leads."""
    import pyarrow as pa

    rng = random.Random(11)
    cases = []
    for region in REGIONS:
        meta = pn.PhoneMetadata.metadata_for_region(region)
        assert meta is not None
        leads = ["", "0", "00", "1", "8", str(meta.country_code), meta.national_prefix or ""]
        for _ in range(120):
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(2, 14)))
            cases.append((rng.choice(leads) + digits, region))
    e164, possible = PhoneBook("DE").arrays(
        pa.array([c[0] for c in cases]), pa.array([c[1] for c in cases])
    )
    got = list(zip(e164.to_pylist(), possible.to_pylist(), strict=True))
    wrong = [(c, g, reference(*c)) for c, g in zip(cases, got, strict=True) if g != reference(*c)]
    assert wrong == []
