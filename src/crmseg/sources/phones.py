"""One phone value to E.164, exactly as ``phonenumbers.parse`` reads it, faster.

Most spellings are digits with the usual punctuation (``+33 6 12 34 56 78``, ``06-12345678``,
``(06) 123 4567``). For those, what ``parse`` returns depends only on the digits and a leading
``+``: its generic text handling (leading symbols, punctuation, extensions, Unicode digits)
reduces them to that compact form. So a plain value is reduced to its compact form and the
compact form is read by the library's own numbering-plan steps (international prefix, country
code, national prefix, length checks), called directly with each region's metadata looked up
once. ``tests/sources/test_phones.py`` holds the result equal to ``parse`` for every region's
example numbers in national, international and E.164 spelling and for random spellings.
Anything else (letters, extensions, other symbols) goes through ``parse`` itself.

A number that parses is written in E.164 with ``possible`` saying whether its length is
plausible for its country. A number of implausible length written nationally loses its trunk
prefix, so it links with its international spelling.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import pyarrow as pa

# Digits with common punctuation and at most a leading plus.
_PLAIN = re.compile(r"\+?[0-9 ()\-./]*")
_NOT_DIGIT = re.compile(r"[^0-9]")
Result = tuple[str | None, bool]


def compact(raw: str) -> str | None:
    """``+`` (when leading) and the digits of a plainly spelled number, else None."""
    text = raw.strip()
    if len(text) > 250 or not _PLAIN.fullmatch(text):
        return None
    digits = _NOT_DIGIT.sub("", text)
    if len(digits) < 3:  # phonenumbers' viability rules differ below three digits
        return None
    return ("+" if text.startswith("+") else "") + digits


def normalise_phone(raw: str, region: str, memo: dict[tuple[str, str], Result]) -> Result:
    """(E.164 or None, possible) of ``raw`` read in ``region``; ``memo`` caches compact forms."""
    short = compact(raw)
    if short is None:
        return _finish(_parse(raw, region), raw.strip().startswith("+"), region)
    key = (short, region)
    found = memo.get(key)
    if found is None:
        found = _finish(_plan_number(short, region), short.startswith("+"), region)
        memo[key] = found
    return found


def _parse(raw: str, region: str) -> Any:
    import phonenumbers as pn

    try:
        return pn.parse(raw, region)
    except pn.NumberParseException:
        return None


def _finish(number: Any, plus: bool, region: str) -> Result:
    if number is None:
        return (None, False)
    u = _lib()
    nsn = u.national_significant_number(number)
    text = f"+{number.country_code}{nsn}"
    possible = _possible(number.country_code, nsn)
    if number.italian_leading_zero and not plus and _home(region)[0].national_prefix:
        # For a number of implausible length phonenumbers keeps the trunk prefix ("06-..." ->
        # +3306...); where the region has one, drop it so the same (wrong) number written
        # nationally and internationally still links.
        text = f"+{number.country_code}{number.national_number}"
        again = _plan_number(text, region)
        possible = again is not None and _possible(
            again.country_code, u.national_significant_number(again)
        )
    return (text, possible)


@cache
def _lib() -> Any:
    import phonenumbers.phonenumberutil as u

    return u


@cache
def _number_type() -> Any:
    from phonenumbers import PhoneNumber

    return PhoneNumber


@cache
def _home(region: str) -> tuple[Any, Any]:
    """A region's metadata and its compiled international dialing prefix."""
    from phonenumbers import PhoneMetadata

    u = _lib()
    meta = PhoneMetadata.metadata_for_region(region, None)
    idd = (meta.international_prefix if meta is not None else None) or "NonMatch"
    return meta, u.re_compile(idd)


@cache
def _code(code: int) -> tuple[str, Any]:
    """The main region of a calling code and that code's metadata."""
    from phonenumbers import PhoneMetadata

    where = _lib().region_code_for_country_code(code)
    return where, PhoneMetadata.metadata_for_region_or_calling_code(code, where)


def _possible(code: int, nsn: str) -> bool:
    """phonenumbers.is_possible_number for a parsed number (its length rules)."""
    u = _lib()
    meta = _code(code)[1]
    if code not in u.COUNTRY_CODE_TO_REGION_CODE or meta is None:
        return False
    result = u._test_number_length(nsn, meta)
    return result in (u.ValidationResult.IS_POSSIBLE, u.ValidationResult.IS_POSSIBLE_LOCAL_ONLY)


def _country_code(digits: str, region: str, plus: bool) -> tuple[int, str] | None:
    """phonenumbers' ``_maybe_extract_country_code`` for compact digits: (code or 0, national
    digits), None where it raises."""
    u = _lib()
    home, idd = _home(region)
    international = plus
    if not plus:
        international, digits = u._parse_prefix_as_idd(idd, digits)
    if international:
        if len(digits) <= u._MIN_LENGTH_FOR_NSN:
            return None
        code, national = u._extract_country_code(digits)
        return (code, national) if code != 0 else None
    prefix = str(home.country_code)
    if digits.startswith(prefix):  # the home country code written without a plus
        rest = digits[len(prefix) :]
        _, rest, _ = u._maybe_strip_national_prefix_carrier_code(rest, home)
        desc = home.general_desc
        if (
            not u._match_national_number(digits, desc, False)
            and u._match_national_number(rest, desc, False)
        ) or u._test_number_length(digits, home) == u.ValidationResult.TOO_LONG:
            return home.country_code, rest
    return 0, digits


def _plan_number(short: str, region: str) -> Any:
    """``phonenumbers.parse(short, region)`` for a compact form, by the library's own
    numbering-plan steps; None where parse would raise."""
    u = _lib()
    home = _home(region)[0]
    if home is None:
        return None
    plus = short.startswith("+")
    digits = short[1:] if plus else short
    found = _country_code(digits, region, plus)
    if found is None and plus and len(digits) > u._MIN_LENGTH_FOR_NSN:
        # parse reads an unknown code after a plus again as if the plus were not there, and
        # gives up unless that finds a country code.
        found = _country_code(digits, region, False)
        if found is not None and found[0] == 0:
            return None
    if found is None:
        return None
    code, national = found
    if code != 0:
        where, by_code = _code(code)
        meta = home if where == region else by_code
    else:
        meta, code = home, home.country_code
    if meta is None or len(national) < u._MIN_LENGTH_FOR_NSN:
        return None
    _, stripped, _ = u._maybe_strip_national_prefix_carrier_code(national, meta)
    if u._test_number_length(stripped, meta) not in (
        u.ValidationResult.TOO_SHORT,
        u.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
        u.ValidationResult.INVALID_LENGTH,
    ):
        national = stripped
    if not u._MIN_LENGTH_FOR_NSN <= len(national) <= u._MAX_LENGTH_FOR_NSN:
        return None
    number = _number_type()(country_code=code)
    u._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    return number


# --- many values at once -------------------------------------------------------------------

_INTERNATIONAL = r"^\+[0-9 ()\-./]*$"


def international(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(E.164, possible) of plain international spellings (``+`` and digits with the usual
    punctuation), computed on whole columns; null where a value needs the per-value path.

    For these, parse's answer is the compact form itself whenever the digits after the
    country code do not begin with the national prefix of that country (which it would
    strip), and whether it is possible depends only on the country code and the length."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    u = _lib()
    digits, plain = _plain(raw, _INTERNATIONAL)
    usable = pc.and_(
        pc.greater_equal(pc.utf8_length(digits), 3), pc.invert(pc.starts_with(digits, "0"))
    )
    candidate = pc.and_(plain, usable)
    codes = pa.array(sorted(str(c) for c in u.COUNTRY_CODE_TO_REGION_CODE), pa.string())
    # Calling codes form a prefix code: at most one of the first 1, 2, 3 digits is one.
    code = pa.nulls(len(raw), pa.string())
    for width in (3, 2, 1):
        head = pc.utf8_slice_codeunits(digits, 0, width)
        code = pc.if_else(pc.is_in(head, value_set=codes), head, code)
    ok = pc.fill_null(pc.and_(candidate, pc.is_valid(code)), False)
    rows = pc.indices_nonzero(ok).to_numpy()
    accepted = np.zeros(len(raw), dtype=bool)
    possible = np.zeros(len(raw), dtype=bool)
    if len(rows):
        for cc_text, group in _groups(code, rows):
            keep, plausible = _accept(int(cc_text), digits.take(pa.array(group)), len(cc_text))
            accepted[group] = keep
            possible[group] = plausible
    e164 = pc.if_else(
        pa.array(accepted),
        pc.binary_join_element_wise("+", digits, ""),
        pa.scalar(None, pa.string()),
    )
    return e164, pa.array(possible, mask=~accepted)


def _plain(raw: pa.Array, spelling: str) -> tuple[pa.Array, pa.Array]:
    """(digits, whether the trimmed value matches ``spelling`` and is not over-long), as
    ``compact`` decides one value."""
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(raw)
    digits = pc.replace_substring_regex(text, r"[^0-9]", "")
    short = pc.less_equal(pc.utf8_length(text), 250)
    return digits, pc.and_(pc.match_substring_regex(text, spelling), short)


def _groups(keys: pa.Array, rows: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(key, its rows) for each distinct value of ``keys`` at ``rows``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.take(keys, pa.array(rows)).dictionary_encode()
    which = found.indices.to_numpy()
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(found.dictionary) + 1))
    for k, key in enumerate(found.dictionary.to_pylist()):
        yield key, rows[order[bounds[k] : bounds[k + 1]]]


def _accept(cc: int, digits: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Of numbers with calling code ``cc`` (their digits), those whose compact form is parse's
    answer, and whether each is possible: the national number has a length parse accepts
    and does not begin with what parse would strip as a national prefix."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    u = _lib()
    rest = pc.utf8_slice_codeunits(digits, width)
    lengths = pc.utf8_length(rest).to_numpy()
    keep = (lengths >= u._MIN_LENGTH_FOR_NSN) & (lengths <= u._MAX_LENGTH_FOR_NSN)
    meta = _code(cc)[1]
    if meta is None:  # parse has no metadata for the code: the per-value path says what
        none = np.zeros(len(digits), dtype=bool)
        return none, none
    prefix = meta.national_prefix_for_parsing
    if prefix:
        # "begins with": a match at the start, whichever engine runs the (regular) pattern
        try:
            stripped = pc.match_substring_regex(rest, f"^(?:{prefix})").to_numpy(
                zero_copy_only=False
            )
        except pa.ArrowInvalid:  # a pattern RE2 cannot run: Python's re, value by value
            pattern = u.re_compile(prefix)
            stripped = np.array([pattern.match(r) is not None for r in rest.to_pylist()])
        keep &= ~stripped
    plausible = np.zeros(len(digits), dtype=bool)
    for n in np.unique(lengths[keep]):
        same = keep & (lengths == n)
        example = rest[int(np.flatnonzero(same)[0])].as_py()  # the rules read only lengths
        plausible[same] = _possible(cc, example)
    return keep, plausible


_NATIONAL = r"^[0-9 ()\-./]*$"


def national(raw: pa.Array, regions: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(E.164, possible) of plain national spellings (digits with the usual punctuation, no
    plus), each read in its region (``regions``: a supported region code per value, or
    null), computed on whole columns a region at a time; null where a value needs the
    per-value path.

    For these, ``_plan_number`` reduces to: no international dialling prefix and no home
    calling code in front (those go value by value), the region's national prefix stripped
    where its rules allow, and length checks, decided once per distinct length. The
    region's patterns run on RE2, whose matches are Python's for these regular patterns; a
    region whose patterns RE2 cannot run, or that rewrites its prefix, goes value by value."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    digits, plain = _plain(raw, _NATIONAL)
    long_enough = pc.greater_equal(pc.utf8_length(digits), 3)
    usable = pc.and_(pc.and_(plain, long_enough), pc.is_valid(regions))
    rows = pc.indices_nonzero(pc.fill_null(usable, False)).to_numpy()
    e164 = pa.nulls(len(raw), pa.string())
    possible = np.zeros(len(raw), dtype=bool)
    if not len(rows):
        return e164, pa.array(possible, mask=np.ones(len(raw), dtype=bool))
    parts: list[tuple[np.ndarray, pa.Array]] = []
    for region, group in _groups(regions, rows):
        try:
            read = _national_in(region, pc.take(digits, pa.array(group)))
        except pa.ArrowInvalid:  # a pattern RE2 cannot run: value by value
            continue
        if read is not None:
            text_k, possible_k = read
            keep = pc.is_valid(text_k).to_numpy(zero_copy_only=False)
            parts.append((group[keep], text_k.filter(pa.array(keep))))
            possible[group[keep]] = possible_k[keep]
    if parts:
        where = np.concatenate([g for g, _ in parts])
        values = pa.concat_arrays([v for _, v in parts]).take(pa.array(np.argsort(where)))
        mask = np.zeros(len(raw), dtype=bool)
        mask[where] = True
        e164 = pc.replace_with_mask(e164, pa.array(mask), values)
    return e164, pa.array(possible, mask=pc.is_null(e164).to_numpy(zero_copy_only=False))


def _national_in(region: str, digits: pa.Array) -> tuple[pa.Array, np.ndarray] | None:
    """(E.164 or null, possible) of compact national ``digits`` read in ``region``; None
    when the whole region goes value by value."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    u = _lib()
    home = _home(region)[0]
    if home is None or home.national_prefix_transform_rule:
        return None
    own = str(home.country_code)
    idd = home.international_prefix
    # A dialling prefix or the home calling code in front: value by value.
    ok = pc.invert(pc.starts_with(digits, own))
    if idd:
        ok = pc.and_(ok, pc.invert(pc.match_substring_regex(digits, f"^(?:{idd})")))
    number = digits
    prefix = home.national_prefix_for_parsing
    if prefix:
        general = home.general_desc
        pattern = general.national_number_pattern if general is not None else None

        def viable(values: pa.Array) -> pa.Array:
            if not pattern:
                return pa.array(np.zeros(len(values), dtype=bool))
            return pc.match_substring_regex(values, f"^(?:{pattern})$")

        start = f"^(?:{prefix})"
        rest = pc.replace_substring_regex(digits, start, "", max_replacements=1)
        lengths = pc.utf8_length(rest).to_numpy(zero_copy_only=False)
        rejected = (
            u.ValidationResult.TOO_SHORT,
            u.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
            u.ValidationResult.INVALID_LENGTH,
        )
        accept = np.zeros(len(digits), dtype=bool)
        for n in np.unique(lengths[lengths > 0]):  # the rules read only lengths
            accept[lengths == n] = u._test_number_length("9" * int(n), home) not in rejected
        strip = pc.and_(
            pc.match_substring_regex(digits, start),
            pc.invert(pc.and_(viable(digits), pc.invert(viable(rest)))),
        )
        strip = pc.and_(strip, pa.array(accept))
        number = pc.if_else(strip, rest, digits)
    lengths = pc.utf8_length(number).to_numpy(zero_copy_only=False)
    ok = pc.and_(ok, pc.invert(pc.starts_with(number, "0")))  # leading zeros: value by value
    ok_np = ok.to_numpy(zero_copy_only=False)
    ok_np &= (lengths >= u._MIN_LENGTH_FOR_NSN) & (lengths <= u._MAX_LENGTH_FOR_NSN)
    plausible = np.zeros(len(digits), dtype=bool)
    for n in np.unique(lengths[ok_np]):
        plausible[ok_np & (lengths == n)] = _possible(home.country_code, "9" * int(n))
    text = pc.if_else(
        pa.array(ok_np),
        pc.binary_join_element_wise("+" + own, number, ""),
        pa.scalar(None, pa.string()),
    )
    return text, plausible
