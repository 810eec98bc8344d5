"""Incremental loading: a source is read again only when its content or its mapping changed.

Each loaded source has a fingerprint in the warehouse's ``crmseg._sources`` table, written in
the same transaction as its data, so the fingerprint always describes what the warehouse holds:

* a file source: its files' paths, sizes and modification times, a SHA-256 of their bytes
  and a hash of its configuration (mapping, format, timezone). Unchanged sizes and times mean
  unchanged; otherwise the bytes decide, so a file that was only touched is not reloaded;
* a table source: its row count and an order-independent checksum of its rows.

Parquet sources are snapshotted: their files are copied (one read that also hashes them) next
to the warehouse and the canonical table is a view over the snapshot, which DuckDB reads in
place as fast as its own tables. Overwriting the original file later changes nothing until the
next load sees it. CSV and table sources, and sources whose mapping parses text, are copied in
as tables. Snapshots that no committed fingerprint references (a run that failed or was
killed) are deleted by the next load.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmseg.backends.base import CANONICAL_SCHEMA, Backend
from crmseg.config import Config, SourceConfig
from crmseg.sources import retention
from crmseg.sources.loader import Planned, plan_sources
from crmseg.sources.model import TABLES

if TYPE_CHECKING:
    import ibis.expr.types as ir

Progress = Callable[[str, float], None]

RECORDS = "_sources"  # crmseg._sources: one row per loaded source (and per derived step)
# crmseg._forgotten: SHA-256 of forgotten ids, emails and phones (kind, sha256, at)
FORGOTTEN = "_forgotten"
_CHUNK = 8 << 20


@dataclass
class Sync:
    """What a load found: sources to (re)load, planned and checked, and those it keeps."""

    planned: dict[str, Planned]  # changed sources, ready to write
    unchanged: list[str]
    removed: list[str]
    records: dict[str, dict[str, Any]]  # name -> record to commit (every configured source)
    created: list[Path] = field(default_factory=list)  # snapshot folders made by this load

    @property
    def changed(self) -> list[str]:
        return sorted(self.planned)

    def tables(self, backend: Backend) -> dict[str, ir.Table]:
        """Every configured source as an expression: planned when changed, else loaded."""
        out = {n: backend.canonical(n) for n in self.unchanged}
        out.update({n: p.expr for n, p in self.planned.items()})
        return out

    def digest(self) -> str:
        """What the warehouse holds once this load commits: every source's fingerprint (file
        times left out: a touched file is the same data)."""
        body = {
            n: {k: v for k, v in r["fingerprint"].items() if k != "files"}
            for n, r in sorted(self.records.items())
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def nonfinite(self) -> dict[str, dict[str, int]]:
        """table -> column -> NaN or infinite values its load found (loaded as missing)."""
        out = {n: dict(r["fingerprint"].get("nonfinite", {})) for n, r in self.records.items()}
        out.update({n: dict(p.nonfinite) for n, p in self.planned.items()})
        return {n: cols for n, cols in out.items() if cols}

    def purged(self) -> dict[str, int]:
        """Source -> rows this load leaves out as past their retention window."""
        out = {n: self.records[n]["fingerprint"].get("expired", 0) for n in self.planned}
        return {n: int(v) for n, v in sorted(out.items()) if v}

    def status(self) -> dict[str, str]:
        out = dict.fromkeys(self.unchanged, "unchanged")
        out.update(dict.fromkeys(self.planned, "loaded"))
        out.update(dict.fromkeys(self.removed, "removed"))
        return dict(sorted(out.items()))

    def discard(self) -> None:
        """Remove the snapshots this load made (it will not commit)."""
        for folder in self.created:
            shutil.rmtree(folder, ignore_errors=True)
        self.created.clear()


def stored(backend: Backend) -> dict[str, dict[str, Any]]:
    """The committed records of ``crmseg._sources`` (empty before the first load)."""
    if not backend.has_table(RECORDS, database=CANONICAL_SCHEMA):
        return {}
    rows = backend.execute(backend.canonical(RECORDS)).to_pylist()
    return {r["name"]: {**r, "fingerprint": json.loads(r["fingerprint"])} for r in rows}


def config_hash(config: Config, source: SourceConfig, name: str | None = None) -> str:
    body: dict[str, Any] = {
        "source": source.model_dump(mode="json"),
        "timezone": config.timezone,
        # a load counts non-finite numbers only for the checks: turning them on reloads
        "quality": config.quality.enabled,
    }
    at = retention.cutoffs(config).get(name) if name is not None else None
    if at is not None:  # a new day purges again: the source reloads once a day
        body["retention"] = at.isoformat()
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def prepare(
    config: Config,
    root: Path,
    backend: Backend,
    progress: Progress | None = None,
    *,
    force: bool = False,
    snapshot: bool = True,
) -> Sync:
    """Find what changed since the last committed load and plan exactly those sources.

    Snapshots of changed Parquet files are written next to the warehouse and read through
    views created in the caller's pending transaction (``Sync.discard`` removes the files if
    the load does not commit). With ``snapshot=False`` nothing at all is written: changed
    sources are planned straight from their files (diff, previews of new data).
    """
    previous = stored(backend)
    existing = set(backend.canonical_tables())
    records: dict[str, dict[str, Any]] = {}
    unchanged: list[str] = []
    changed: dict[str, list[str] | None] = {}  # name -> files to read (None: as configured)
    created: list[Path] = []
    names = list(config.sources)
    derived: list[str] = []
    try:
        for i, name in enumerate(names):
            if progress:
                progress(f"checking {name}", i / max(len(names), 1))
            source = config.sources[name]
            if source.derive is not None:
                derived.append(name)
                continue
            before = previous.get(name) if name in existing and not force else None
            if source.sql is not None:
                record, same = _query_fingerprint(config, root, backend, name, source, before)
                if record is None:
                    changed[name] = None
                    continue
                records[name] = record
                if same:
                    unchanged.append(name)
                else:
                    changed[name] = None
                continue
            record, files, same = _fingerprint(
                config, root, backend, name, source, before, snapshot
            )
            if record is None:  # unreadable: plan_sources reports why
                changed[name] = None
                continue
            if files is not None and record.get("snapshot"):
                created.append(Path(record["snapshot"]))
            records[name] = record
            if same:
                unchanged.append(name)
            else:
                changed[name] = files
        for name in derived:  # customers from another source: new rows there, new customers
            base = config.sources[name].derive
            assert base is not None
            before = previous.get(name) if name in existing and not force else None
            fp = {
                "config": config_hash(config, config.sources[name], name),
                "derive": base,
                "from": {k: v for k, v in records.get(base, {}).get("fingerprint", {}).items()
                         if k != "files"},
            }  # fmt: skip
            same = before is not None and before["fingerprint"] == fp and base in unchanged
            records[name] = _record(name, fp, None, before if same else None)
            if same:
                unchanged.append(name)
            else:
                changed[name] = None
        # order_items copy customer_id/ordered_at from their orders: new orders, new items.
        filled = previous.get("order_items", {}).get("fingerprint", {}).get("filled")
        if "orders" in changed and "order_items" in unchanged and filled:
            unchanged.remove("order_items")
            changed["order_items"] = None
            records["order_items"]["fingerprint"]["content"] = None
        planned = _plan(config, root, backend, changed, records) if changed else {}
    except BaseException:
        for folder in created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    removed = sorted(n for n in existing if n in TABLES and n not in config.sources)
    return Sync(planned, unchanged, removed, records, created)


def _plan(
    config: Config,
    root: Path,
    backend: Backend,
    changed: Mapping[str, list[str] | None],
    records: dict[str, dict[str, Any]],
) -> dict[str, Planned]:
    """Plan the changed sources; snapshots are read through persistent views
    (``crmseg._raw_<name>``), written in the caller's pending transaction."""
    raws = {
        name: backend.files(f"_raw_{name}", files, "parquet")
        for name, files in changed.items()
        if files is not None
    }
    planned = plan_sources(
        config, root, backend, None, only=set(changed), files=changed, raw_tables=raws
    )
    for name, p in planned.items():
        record = records.get(name)
        if record is None:
            continue
        record["view"] = name in raws and p.light
        # Kept with the load: quality judges these after the values became missing.
        record["fingerprint"].pop("nonfinite", None)
        if p.nonfinite:
            record["fingerprint"]["nonfinite"] = p.nonfinite
        if name == "order_items":
            record["fingerprint"]["filled"] = not p.light
        if p.expired is not None:
            # Rows past the window are purged: a snapshot (a copy of the file, with them) is
            # not kept; the source is copied in without them.
            expired = int(backend.scalar(p.expired.count()))
            record["fingerprint"]["expired"] = expired
            if expired:
                record["view"] = False
    if config.privacy.suppress_forgotten:
        _suppress(backend, planned, records, config.identity.default_region)
    return planned


def _suppress(
    backend: Backend,
    planned: Mapping[str, Planned],
    records: dict[str, dict[str, Any]],
    region: str,
) -> None:
    """Leave out the rows of forgotten people (by the hash of their customer id, and of a
    customer's email or E.164 phone) from what is loaded again. A source that had any is
    copied in as a table, so its snapshot (a copy of the file, with them) is not kept."""
    hashes = forgotten(backend)
    if not hashes:
        return
    for name, p in planned.items():
        t = p.expr
        hit: ir.BooleanValue | None = None
        if "customer_id" in t.columns and hashes.get("customer_id"):
            key = t.customer_id.cast("string").hexdigest("sha256")
            hit = key.isin(hashes["customer_id"]).fill_null(False)
        if name == "customers" and "email" in t.columns and hashes.get("email"):
            mail = t.email.cast("string").strip().lower().hexdigest("sha256")
            here = mail.isin(hashes["email"]).fill_null(False)
            hit = here if hit is None else hit | here
        if name == "customers" and "phone" in t.columns and hashes.get("phone"):
            here = _by_phone(backend, t, set(hashes["phone"]), region)
            if here is not None:
                hit = here if hit is None else hit | here
        if hit is None or not int(backend.scalar(t.filter(hit).count())):
            continue
        p.expr = t.filter(~hit)
        if name in records:
            records[name]["view"] = False


def _by_phone(
    backend: Backend, customers: ir.Table, hashes: set[str], region: str
) -> ir.BooleanValue | None:
    """Customers whose phone, in E.164 as identity reads it, hashes to one of ``hashes``."""
    import ibis
    import pyarrow as pa

    from crmseg.sources.normalize import PhoneBook
    from crmseg.sources.pii import digest

    cols = ["customer_id", "phone"] + (["country"] if "country" in customers.columns else [])
    rows = backend.execute(customers.filter(customers.phone.notnull()).select(*cols))
    if not rows.num_rows:
        return None
    country = rows.column("country") if "country" in cols else None
    e164, _ = PhoneBook(region).arrays(rows.column("phone").cast(pa.string()), country)
    ids = rows.column("customer_id").cast(pa.string()).to_pylist()
    matched = [
        cid for cid, e in zip(ids, e164.to_pylist(), strict=True) if e and digest(e) in hashes
    ]
    if not matched:
        return None
    keys = ibis.memtable(pa.table({"v": pa.array(matched, pa.string())})).v
    return customers.customer_id.cast("string").isin(keys).fill_null(False)


def forgotten(backend: Backend) -> dict[str, list[str]]:
    """The stored hashes of forgotten people, per kind (``customer_id``, ``email``, ...)."""
    if not backend.has_table(FORGOTTEN, database=CANONICAL_SCHEMA):
        return {}
    out: dict[str, list[str]] = {}
    for row in backend.execute(backend.canonical(FORGOTTEN)).to_pylist():
        out.setdefault(row["kind"], []).append(row["sha256"])
    return out


def remember_forgotten(backend: Backend, hashes: Mapping[str, set[str]], at: datetime) -> None:
    """Add hashes to ``crmseg._forgotten`` (inside the caller's pending block)."""
    import ibis
    import pyarrow as pa

    known: dict[tuple[str, str], datetime | None] = {}
    if backend.has_table(FORGOTTEN, database=CANONICAL_SCHEMA):
        for r in backend.execute(backend.canonical(FORGOTTEN)).to_pylist():
            known[(r["kind"], r["sha256"])] = r["at"]
    for kind, hs in sorted(hashes.items()):
        for h in sorted(hs):
            known.setdefault((kind, h), at)
    table = pa.table(
        {
            "kind": pa.array([k for k, _ in known], pa.string()),
            "sha256": pa.array([h for _, h in known], pa.string()),
            "at": pa.array(list(known.values()), pa.timestamp("us")),
        }
    )
    backend.put(FORGOTTEN, ibis.memtable(table))


def _fingerprint(
    config: Config,
    root: Path,
    backend: Backend,
    name: str,
    source: SourceConfig,
    before: dict[str, Any] | None,
    snapshot: bool = True,
) -> tuple[dict[str, Any] | None, list[str] | None, bool]:
    """(record, files to read when changed, unchanged?) of one source."""
    conf = config_hash(config, source, name)
    fp: dict[str, Any]
    old = before["fingerprint"] if before is not None else None
    if old is not None and old.get("config") != conf:
        old = None  # a new mapping reloads, whatever the data
    if source.table is not None:
        database, _, table = source.table.rpartition(".")
        if not backend.has_table(table, database=database or None):
            return None, None, False
        checksum = backend.checksum(backend.table(table, database=database or None))
        fp = {"config": conf, "table": source.table, "checksum": checksum}
        same = old is not None and old.get("checksum") == checksum
        if same:
            _carry(old, fp)
        return _record(name, fp, None, before if same else None), None, same
    assert source.path is not None
    matches = sorted(glob.glob(str(root / source.path)))
    if not matches:
        return None, None, False
    stats = [[m, os.stat(m).st_size, os.stat(m).st_mtime_ns] for m in matches]
    snapshot_ok = before is None or not before.get("snapshot") or _own(before["snapshot"], backend)
    if old is not None and old.get("files") == stats and snapshot_ok:
        return _record(name, old, before["snapshot"] if before else None, before), None, True
    snapshots = backend.snapshots if snapshot else None
    if source.file_format == "parquet" and snapshots is not None:
        folder = Path(snapshots) / f"{name}-{uuid.uuid4().hex[:12]}"
        content, files = _copy(matches, folder)
    else:
        folder, content, files = None, _digest(matches), None
    fp = {"config": conf, "files": stats, "content": content}
    if old is not None and old.get("content") == content and snapshot_ok:
        # Only touched: keep what is loaded, remember the new times.
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        _carry(old, fp)
        return _record(name, fp, before["snapshot"] if before else None, before), None, True
    return _record(name, fp, str(folder) if folder else None, None), files, False


def _own(snapshot: str, backend: Backend) -> bool:
    """The snapshot exists and belongs to this warehouse. A project folder copied elsewhere
    still records (and its views read) the original's absolute snapshot paths: its sources
    load again once, into its own snapshots, so moving or deleting the original cannot
    break it or change what it reads."""
    path = Path(snapshot)
    mine = backend.snapshots
    return path.is_dir() and mine is not None and path.parent.resolve() == Path(mine).resolve()


def _query_fingerprint(
    config: Config,
    root: Path,
    backend: Backend,
    name: str,
    source: SourceConfig,
    before: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, bool]:
    """(record, unchanged?) of a ``sql:`` source: its query and settings, and each input it
    names fingerprinted like a source of its own (its rows are copied in, never a view)."""
    from crmseg.sources.loader import referenced_inputs

    old = before["fingerprint"] if before is not None else None
    fp: dict[str, Any] = {"config": config_hash(config, source, name), "inputs": {}}
    same = old is not None and old.get("config") == fp["config"]
    for used in referenced_inputs(source, config.inputs, backend.written):
        given = config.inputs[used]
        as_source = SourceConfig(
            path=given.path, table=given.table, format=given.format, delimiter=given.delimiter
        )
        prior = (old or {}).get("inputs", {}).get(used)
        earlier = None if prior is None else _record(used, prior, None, None)
        record, _, unchanged = _fingerprint(
            config, root, backend, used, as_source, earlier, snapshot=False
        )
        if record is None:
            return None, False
        fp["inputs"][used] = record["fingerprint"]
        same = same and unchanged
    if same:
        _carry(old, fp)
    return _record(name, fp, None, before if same else None), same


def _carry(old: Mapping[str, Any] | None, fp: dict[str, Any]) -> None:
    """What a load found about unchanged content stays with its new fingerprint."""
    for key in ("nonfinite", "filled", "expired"):
        if old is not None and key in old:
            fp[key] = old[key]


def _record(
    name: str, fp: dict[str, Any], snapshot: str | None, before: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "name": name,
        "fingerprint": fp,
        "snapshot": snapshot,
        "rows": before["rows"] if before else None,
        "loaded_at": before["loaded_at"] if before else None,
        "view": bool(before["view"]) if before else False,
    }


def _digest(paths: list[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _copy(paths: list[str], folder: Path) -> tuple[str, list[str]]:
    """Copy files into ``folder`` while hashing them (one read); returns (hash, copies)."""
    folder.mkdir(parents=True)
    h = hashlib.sha256()
    out = []
    for i, path in enumerate(paths):
        target = folder / f"part-{i:05d}{Path(path).suffix}"
        with open(path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                dst.write(chunk)
        out.append(str(target))
    return h.hexdigest(), out


def commit(
    backend: Backend,
    sync: Sync,
    derived: Mapping[str, ir.Table] | None = None,
    derived_records: Mapping[str, dict[str, Any]] | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    views: Mapping[str, Callable[[Callable[[str], ir.Table]], ir.Table]] | None = None,
) -> dict[str, int]:
    """Write the changed sources (and ``derived`` tables, e.g. identity's, then ``views``
    built over what is written) and the new records; call inside ``backend.pending()`` so it
    commits with the run. Returns the row count of every configured source."""

    stamp = now or datetime.now()
    names = list(sync.planned)
    for i, name in enumerate(names):
        if progress:
            progress(f"writing {name}", i / max(len(names), 1))
        planned = sync.planned[name]
        record = sync.records[name]
        backend.put(name, planned.expr, view=record["view"])
        # A view selects every row of its snapshot: count those (Parquet metadata answers).
        counted = backend.canonical(f"_raw_{name}" if record["view"] else name)
        record["rows"] = int(backend.scalar(counted.count()))
        record["loaded_at"] = stamp
    for name, expr in (derived or {}).items():
        backend.put(name, expr)
    for name, build in (views or {}).items():
        backend.put(name, build(backend.canonical), view=True)
    for name in sync.planned:
        if not sync.records[name]["view"]:
            backend.drop(f"_raw_{name}")  # copied in: the snapshot is no longer read
            sync.records[name]["snapshot"] = None
    for name in sync.removed:
        backend.drop(name)
        backend.drop(f"_raw_{name}")
    records = {**sync.records, **(derived_records or {})}
    for name, record in records.items():
        if record.get("loaded_at") is None:
            record["loaded_at"] = stamp
        if record.get("rows") is None and backend.has_table(name, database=CANONICAL_SCHEMA):
            record["rows"] = int(backend.scalar(backend.canonical(name).count()))
    _write_records(backend, records)
    if progress:
        progress("loaded", 1.0)
    return {n: int(sync.records[n]["rows"] or 0) for n in sync.records}


def _write_records(backend: Backend, records: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace ``crmseg._sources`` with ``records`` (inside the caller's pending block)."""
    import ibis
    import pyarrow as pa

    rows = list(records.values())
    table = pa.table(
        {
            "name": pa.array([r["name"] for r in rows], pa.string()),
            "fingerprint": pa.array(
                [json.dumps(r["fingerprint"], sort_keys=True) for r in rows], pa.string()
            ),
            "snapshot": pa.array([r.get("snapshot") for r in rows], pa.string()),
            "rows": pa.array([r.get("rows") for r in rows], pa.int64()),
            "loaded_at": pa.array([r["loaded_at"] for r in rows], pa.timestamp("us")),
            "view": pa.array([bool(r.get("view")) for r in rows], pa.bool_()),
        }
    )
    backend.put(RECORDS, ibis.memtable(table))


def forget_rows(backend: Backend, values: ir.Column, keys: ir.Column) -> int:
    """Rewrite every snapshot without the rows of forgotten people: a customer id or key
    among ``keys``, or any text column equal to one of ``values`` (inside the caller's
    pending block). Each changed snapshot is written to a new folder and its view and record
    point there; the old folder is removed by :func:`cleanup` once the new records are
    committed, so a failure leaves the old data whole. Returns the rows removed."""
    records = stored(backend)
    removed = 0
    for name, record in sorted(records.items()):
        if not record.get("view") or not record.get("snapshot"):
            continue
        table = backend.canonical(f"_raw_{name}")
        hit = matching(table, values, keys)
        if hit is None:
            continue
        n = int(backend.scalar(table.filter(hit).count()))
        if n == 0:
            continue
        out = Path(str(backend.snapshots)) / f"{name}-{uuid.uuid4().hex[:12]}"
        out.mkdir(parents=True, exist_ok=True)
        path = str(out / "part-00000.parquet")
        backend.write_parquet(table.filter(~hit), path)
        backend.files(f"_raw_{name}", [path], "parquet")
        record["snapshot"] = str(out)
        record["rows"] = int(record["rows"] or 0) - n if record.get("rows") is not None else None
        removed += n
    if removed:
        _write_records(backend, records)
    return removed


KEY_COLUMNS = ("customer_id", "customer_key")


def matching(table: ir.Table, values: ir.Column, keys: ir.Column) -> ir.BooleanValue | None:
    """Rows whose customer id or key is among ``keys``, or where any text column equals one
    of ``values`` (None: no text columns). Ids are compared only as ids: with numeric ids,
    customer ``12`` is not order ``12``."""
    hit: ir.BooleanValue | None = None
    for column in table.columns:
        col = table[column]
        if not col.type().is_string():
            continue
        here = col.isin(values).fill_null(False)
        if column in KEY_COLUMNS:
            here = here | col.isin(keys).fill_null(False)
        hit = here if hit is None else hit | here
    return hit


def cleanup(backend: Backend) -> None:
    """Delete snapshot folders no committed record references (failed or killed loads,
    replaced snapshots)."""
    folder = backend.snapshots
    if folder is None or not Path(folder).is_dir():
        return
    keep = {r["snapshot"] for r in stored(backend).values() if r.get("snapshot")}
    for child in Path(folder).iterdir():
        if str(child) not in keep:
            shutil.rmtree(child, ignore_errors=True)
