"""Forget people: every record identity merged into them, everywhere crmseg keeps data.

A request names people by customer id, email or phone (or an identifier's value). Each is
found in the loaded customers and identifiers, widened to every record id of the same person
(``identity_map``), and the person's identifying values (record ids, emails and phones as
loaded and normalised, identifier values) are removed:

* the warehouse: rows where any text column equals one of them, from every table and from
  every source snapshot (rewritten to a new folder; its view and record point there);
* the state database: the person's membership intervals, then rows where a text column
  equals one of them (people, send log, sync state, ...) and occurrences inside longer text
  (quality examples, sync payloads), replaced by ``[forgotten]``;
* files crmseg wrote: the carried scans (``.crmseg/steps``, recomputed by the next run) are
  deleted; exports and reports lose the lines or rows that hold a value.

The warehouse commits first and the state last, as in a run; files follow the commits. What a
destination already received is listed in a deletion list per campaign and destination, as
SHA-256 hashes of the normalised email, phone and customer key (how ad platforms match), so
the user can propagate the erasure without crmseg keeping the values.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import CANONICAL_SCHEMA
from crmseg.errors import ForgetError
from crmseg.sources.pii import digest

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from crmseg.backends.base import Backend
    from crmseg.backends.state import StateStore

PLACEHOLDER = "[forgotten]"
JOURNAL = ".crmseg/forget.pending.json"  # a forget under way (see Forget.resume)
_TEXT = (".csv", ".jsonl", ".txt")  # one record per line
_WHOLE = (".json", ".html", ".md")  # values replaced in place


@dataclass
class Forgotten:
    """What one forget did."""

    people: int  # distinct persons
    records: int  # record ids removed (every id identity merged into them)
    unknown: list[str]
    warehouse_rows: int
    state_rows: int
    files: list[str] = field(default_factory=list)  # files rewritten or removed
    deletion_lists: list[str] = field(default_factory=list)


def between_commits() -> None:
    """Runs after the warehouse committed and before the state does (kill tests stop here)."""


def distinctive(value: str) -> bool:
    """Whether a value names one person wherever it appears: an email, a phone, a long id.
    Short numeric ids (customer ``12``) are matched only where a customer id belongs."""
    return (not value.isdigit() and len(value) >= 5) or len(value) >= 8


class Values:
    """What to look for in text: ``values`` as whole tokens (``dwilliams@icloud.com`` is not
    inside ``davidwilliams@icloud.com``, nor ``C0001`` inside ``C00012``), values with other
    characters (a phone written with spaces) as they are, and ``keys`` that are not
    distinctive only as quoted strings (``"12"`` in a JSON list of ids, never the number)."""

    _TOKEN = re.compile(r"[\w.%+@-]+")
    _QUOTED = re.compile(r"(?P<q>[\"'])(?P<v>[^\"'\s]{1,32})(?P=q)")

    def __init__(self, values: Iterable[str], keys: Iterable[str] = ()) -> None:
        self.values = {v for v in values if distinctive(v)}
        self.keys = set(keys)
        self.short = {k for k in self.keys if not distinctive(k)}  # ids only where ids belong
        self.values |= self.keys - self.short
        self._odd = sorted((v for v in self.values if not self._TOKEN.fullmatch(v)),
                           key=lambda v: (-len(v), v))  # fmt: skip

    def _hit(self, token: str) -> bool:
        return token in self.values or token.rstrip(".") in self.values

    def found_in(self, text: str) -> bool:
        if any(self._hit(t) for t in self._TOKEN.findall(text)):
            return True
        if self.short and any(m["v"] in self.short for m in self._QUOTED.finditer(text)):
            return True
        return any(v in text for v in self._odd)

    def replaced(self, text: str) -> str:
        def swap(m: re.Match[str]) -> str:
            t = m.group(0)
            if t in self.values:
                return PLACEHOLDER
            if t.rstrip(".") in self.values:
                return PLACEHOLDER + t[len(t.rstrip(".")) :]
            return t

        text = self._TOKEN.sub(swap, text)
        if self.short:
            text = self._QUOTED.sub(
                lambda m: f"{m['q']}{PLACEHOLDER}{m['q']}" if m["v"] in self.short else m[0], text
            )
        for v in self._odd:
            text = text.replace(v, PLACEHOLDER)
        return text


class Forget:
    """Finds and removes people (see the module's docstring)."""

    def __init__(
        self,
        backend: Backend,
        state: StateStore,
        root: Path,
        default_region: str,
        outputs: Sequence[str] = (),
        forget_history: Any = None,
    ) -> None:
        self.backend = backend
        self.state = state
        self.root = root
        self.default_region = default_region
        self.outputs = outputs  # globs of files destinations and reports write
        self.forget_history = forget_history  # the history's own removal (interval keys)

    # --- who --------------------------------------------------------------------------------

    def find(self, asked: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
        """The record ids each asked id, email or phone names, and those naming nobody."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from crmseg.sources.normalize import PhoneBook

        b = self.backend
        if not b.has_table("customers", database=CANONICAL_SCHEMA):
            raise ForgetError("nothing is loaded yet: run `crmseg run` first")
        c = b.canonical("customers")
        cols = [n for n in ("customer_id", "email", "phone", "country") if n in c.columns]
        people = b.execute(c.select(*cols))
        ids = people.column("customer_id").cast(pa.string())
        found: dict[str, set[str]] = {a: set() for a in asked}

        def add(keys: pa.Array, matched: pa.Array) -> None:
            for key, cid in zip(keys.to_pylist(), matched.to_pylist(), strict=True):
                if key is not None and cid is not None and key in found:
                    found[key].add(str(cid))

        wanted = pa.array(list(asked), pa.string())
        hit = pc.is_in(ids, value_set=wanted)
        add(pc.filter(ids, hit), pc.filter(ids, hit))
        if "email" in people.column_names:
            lowered = {a.strip().lower(): a for a in asked if "@" in a}
            emails = pc.utf8_lower(
                pc.utf8_trim_whitespace(people.column("email").cast(pa.string()))
            )
            hit = pc.is_in(emails, value_set=pa.array(list(lowered), pa.string()))
            for e, cid in zip(pc.filter(emails, hit).to_pylist(), pc.filter(ids, hit).to_pylist(),
                              strict=True):  # fmt: skip
                found[lowered[e]].add(str(cid))
        phones = [a for a in asked if "@" not in a and sum(ch.isdigit() for ch in a) >= 6]
        if phones and "phone" in people.column_names:
            book = PhoneBook(self.default_region)
            e164s = {
                e: a
                for a, (e, _) in zip(
                    phones, book.normalise([(a, None) for a in phones]), strict=True
                )
                if e
            }
            country = people.column("country") if "country" in people.column_names else None
            theirs, _ = book.arrays(people.column("phone"), country)
            hit = pc.fill_null(
                pc.is_in(theirs, value_set=pa.array(list(e164s), pa.string())), False
            )
            for e, cid in zip(pc.filter(theirs, hit).to_pylist(), pc.filter(ids, hit).to_pylist(),
                              strict=True):  # fmt: skip
                found[e164s[e]].add(str(cid))
        if b.has_table("identifiers", database=CANONICAL_SCHEMA):
            t = b.canonical("identifiers")
            rows = b.execute(
                t.filter(t.id_value.cast("string").isin(_column(list(asked)))).select(
                    k=t.id_value.cast("string"), cid=t.customer_id.cast("string")
                )
            )
            add(rows.column("k"), rows.column("cid"))
        unknown = [a for a in asked if not found[a]]
        return {a: sorted(v) for a, v in found.items() if v}, unknown

    def _everyone(self, records: Iterable[str]) -> tuple[list[str], int]:
        """Every record id of the persons behind ``records``, and how many persons."""
        b = self.backend
        seed = sorted(set(records))
        if not b.has_table("identity_map", database=CANONICAL_SCHEMA):
            return seed, len(seed)
        m = b.canonical("identity_map")
        keys = m.filter(m.customer_id.isin(_column(seed))).customer_key
        rows = b.execute(m.filter(m.customer_key.isin(keys)).select("customer_id", "customer_key"))
        mapped = set(rows.column("customer_id").to_pylist())
        persons = set(rows.column("customer_key").to_pylist())
        persons |= {s for s in seed if s not in mapped}  # not in the map: a person of their own
        return sorted(set(seed) | mapped | persons), len(persons)

    def _values(self, records: list[str]) -> tuple[list[str], dict[str, set[str]]]:
        """Every identifying value of ``records``, and the hashes for deletion lists."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from crmseg.sources.normalize import PhoneBook

        b = self.backend
        values = set(records)
        hashes: dict[str, set[str]] = {"customer_id": {digest(r) for r in records}}
        hashes["email"], hashes["phone"] = set(), set()
        book = PhoneBook(self.default_region)
        for name in ("customers", "_raw_customers"):
            if not b.has_table(name, database=CANONICAL_SCHEMA):
                continue
            t = b.canonical(name)
            cols = [n for n in ("email", "phone", "country") if n in t.columns]
            if not cols:
                continue
            rows = b.execute(
                t.filter(t.customer_id.cast("string").isin(_column(records))).select(*cols)
            )
            if "email" in cols:
                for e in rows.column("email").to_pylist():
                    if e and str(e).strip():
                        values |= {str(e), str(e).strip().lower()}
                        hashes["email"].add(digest(str(e).strip().lower()))
            if "phone" in cols:
                raw = rows.column("phone").cast(pa.string())
                country = rows.column("country") if "country" in cols else None
                e164, _ = book.arrays(raw, country)
                for p, e in zip(raw.to_pylist(), e164.to_pylist(), strict=True):
                    if p and str(p).strip():
                        values.add(str(p))
                    if e:
                        values.add(str(e))
                        hashes["phone"].add(digest(str(e)))
        if b.has_table("identifiers", database=CANONICAL_SCHEMA):
            t = b.canonical("identifiers")
            rows = b.execute(
                t.filter(t.customer_id.cast("string").isin(_column(records))).select(
                    v=t.id_value.cast("string")
                )
            )
            values |= {v for v in pc.drop_null(rows.column("v")).to_pylist() if v.strip()}
        return sorted(values), hashes

    # --- forgetting -------------------------------------------------------------------------

    def __call__(self, asked: Sequence[str], keep_going: bool = False) -> Forgotten:
        asked = list(dict.fromkeys(a.strip() for a in asked if a.strip()))
        if not asked:
            raise ForgetError("no id, email or phone to forget")
        found, unknown = self.find(asked)
        if unknown and not keep_going:
            shown = ", ".join(unknown[:5]) + (
                f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            )
            raise ForgetError(
                f"{len(unknown)} of {len(asked)} name nobody loaded: {shown} "
                "(nothing was forgotten; --continue forgets the others)"
            )
        if not found:
            return Forgotten(0, 0, unknown, 0, 0)
        records, persons = self._everyone(r for rs in found.values() for r in rs)
        values, hashes = self._values(records)
        lists = self._deletion_lists(records, hashes)
        # Written before the first commit and removed after the last step: a forget killed
        # in between is finished by the next command that writes (see ``resume``).
        self._journal().write_text(
            json.dumps({"records": records, "values": values,
                        "hashes": {k: sorted(v) for k, v in hashes.items()}})
        )  # fmt: skip
        rows, state_rows, files = self._apply(records, values, hashes)
        return Forgotten(persons, len(records), unknown, rows, state_rows, files, lists)

    def resume(self) -> bool:
        """Finish a forget that was killed after it began removing (True if there was one).
        Every step is idempotent, so steps already committed find nothing left to do."""
        path = self._journal()
        if not path.exists():
            return False
        try:
            job = json.loads(path.read_text())
            records, values = list(job["records"]), list(job["values"])
            hashes = {k: set(v) for k, v in job["hashes"].items()}
        except (ValueError, KeyError, TypeError):
            # torn before the first commit (written in one call): nothing was removed yet
            path.unlink()
            return False
        self._apply(records, values, hashes)
        return True

    def _journal(self) -> Path:
        return self.root / JOURNAL

    def _apply(
        self, records: list[str], values: list[str], hashes: dict[str, set[str]]
    ) -> tuple[int, int, list[str]]:
        import pyarrow as pa

        from crmseg.sources import sync

        found = Values(values, records)
        anywhere = pa.array(sorted(found.values), pa.string())
        keys = pa.array(records, pa.string())
        memo, ids = _column(sorted(found.values)), _column(records)
        with self.state.transaction():
            with self.backend.pending():
                rows = sync.forget_rows(self.backend, memo, ids)
                rows += self._tables(memo, ids)
                sync.remember_forgotten(self.backend, hashes, datetime.now())
            between_commits()
            if self.forget_history is not None:
                self.forget_history(pa.array(records, pa.string()))
            state_rows = self.state.scrub(anywhere, keys, found.replaced, sync.KEY_COLUMNS)
        sync.cleanup(self.backend)  # the old snapshot folders
        files = self._files(found)
        self._journal().unlink(missing_ok=True)
        return rows, state_rows, files

    def _tables(self, values: ir.Column, keys: ir.Column) -> int:
        from crmseg.sources.sync import FORGOTTEN, RECORDS, matching

        b = self.backend
        views = b.views()
        removed = 0
        for name in b.stored_tables():
            if name in views or name in (RECORDS, FORGOTTEN):
                continue
            t = b.canonical(name)
            hit = matching(t, values, keys)
            if hit is None:
                continue
            n = int(b.scalar(t.filter(hit).count()))
            if n:
                b.remove_rows(name, t.filter(~hit))
                removed += n
        return removed

    def _deletion_lists(self, records: list[str], hashes: dict[str, set[str]]) -> list[str]:
        """One CSV per campaign and destination that received any of ``records``: the kind
        and SHA-256 of each of the person's identifiers."""
        import pyarrow as pa

        s = self.state
        got: dict[str, None] = {}
        with s.registered(__gone=pa.table({"k": pa.array(records, pa.string())})):
            if s.has_table("send_log"):
                for (c,) in s.rows(
                    "SELECT DISTINCT campaign FROM send_log "
                    "WHERE customer_key IN (SELECT k FROM __gone) ORDER BY 1"
                ):
                    got[f"campaign-{c}"] = None
            if s.has_table("sync_state"):
                for (d,) in s.rows(
                    "SELECT DISTINCT destination FROM sync_state "
                    "WHERE customer_key IN (SELECT k FROM __gone) ORDER BY 1"
                ):
                    got[f"destination-{d}"] = None
        if not got:
            return []
        folder = self.root / "forget" / datetime.now().strftime("%Y%m%dT%H%M%S")
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["kind,sha256"] + [
            f"{kind},{h}"
            for kind in ("customer_id", "email", "phone")
            for h in sorted(hashes[kind])
        ]
        out = []
        for name in got:
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            path = folder / f"{safe}.csv"
            path.write_text("\n".join(lines) + "\n")
            out.append(str(path))
        return out

    def _files(self, matcher: Values) -> list[str]:
        """Remove the carried scans and scrub the outputs crmseg wrote."""
        changed: list[str] = []
        steps = self.root / ".crmseg" / "steps"
        if steps.is_dir():
            for f in sorted(steps.iterdir()):
                if f.is_file():
                    f.unlink()
                    changed.append(str(f))
        seen: set[Path] = set()
        for pattern in self.outputs:
            for path in sorted(self.root.glob(pattern)):
                if path.is_file() and path not in seen:
                    seen.add(path)
                    if _scrub_file(path, matcher):
                        changed.append(str(path))
        return changed


def _scrub_file(path: Path, found: Values) -> bool:
    """Drop the lines or rows of ``path`` that hold a value (replace them inside whole
    documents); True when the file changed. Written to a temporary file first."""
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if suffix in (".parquet", ".arrow"):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        table = pq.read_table(path) if suffix == ".parquet" else ipc.open_file(str(path)).read_all()
        vs = pa.array(sorted(found.values), pa.string())
        ks = pa.array(sorted(found.keys), pa.string())
        hit = None
        for name, col in zip(table.column_names, table.columns, strict=True):
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                here = pc.fill_null(pc.is_in(col, value_set=vs), False)
                if _keyish(name):
                    here = pc.or_(here, pc.fill_null(pc.is_in(col, value_set=ks), False))
                hit = here if hit is None else pc.or_(hit, here)
        if hit is None or not pc.any(hit).as_py():
            return False
        kept = table.filter(pc.invert(hit))
        if suffix == ".parquet":
            pq.write_table(kept, tmp)
        else:
            with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, kept.schema) as out:
                out.write_table(kept)
        os.replace(tmp, path)
        return True
    if suffix not in _TEXT + _WHOLE:
        return False
    text = path.read_text(errors="replace")
    if not found.found_in(text):
        return False
    if suffix in _TEXT:
        lines = text.splitlines(keepends=True)
        header = lines[:1] if suffix == ".csv" else []  # a CSV's column names stay
        names = next(csv.reader(header), []) if header else []
        keyed = {i for i, n in enumerate(names) if _keyish(n)}
        new = "".join(
            header + [ln for ln in lines[len(header) :] if not _holds(ln, suffix, found, keyed)]
        )
    else:
        new = found.replaced(text)
        if suffix == ".json":
            json.loads(new)  # still a document
    tmp.write_text(new)
    os.replace(tmp, path)
    return True


def _column(values: Sequence[str]) -> ir.Column:
    """``values`` as a one-column table: an ``isin`` against it is a semi-join, where a
    literal list of 10,000 values took seconds to compile and to evaluate."""
    import ibis
    import pyarrow as pa

    return ibis.memtable(pa.table({"v": pa.array(list(values), pa.string())})).v


def _keyish(column: str) -> bool:
    """A column that holds customer ids (``customer_key``, ``customer_id``, ``id``)."""
    name = column.strip().lower()
    return "customer" in name or name in ("id", "key")


def _holds(line: str, suffix: str, found: Values, keyed: set[int]) -> bool:
    """Whether one record of an export holds a value: a CSV cell or a JSON string equal to
    one (exports carry whole values; ids count only in id columns), any whole token in other
    text."""
    if suffix == ".csv":
        return any(
            cell in found.values or (i in keyed and cell in found.keys)
            for row in csv.reader([line])
            for i, cell in enumerate(row)
        )
    if suffix == ".jsonl" and line.strip():
        try:
            record = json.loads(line)
        except ValueError:
            return found.found_in(line)
        if isinstance(record, dict) and any(
            _keyish(k) and str(v) in found.keys for k, v in record.items()
        ):
            return True
        return any(v in found.values for v in _strings(record))
    return found.found_in(line)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
