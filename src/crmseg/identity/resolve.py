"""Deterministic identity resolution: records sharing a normalised email, an E.164 phone or an
identifier (device id, loyalty card, ...) are one person.

``resolve`` computes, from the (planned or loaded) canonical tables, the tables a run
materialises next to the canonical ones, in the same transaction:

* ``identity_map`` (customer_id, customer_key, cluster_size, status): every customer record and
  the key of its person (``status`` is single, merged or blocked);
* ``golden_customers``: one customers row per person, named by its key: a view over the
  customers and two small tables, ``identity_collapsed`` (the records merged into a person)
  and ``golden_merged`` (those persons' golden rows);
* ``identity_links`` (customer_id, kind, value): the shared values that linked merged records;
* ``identity_blocked`` (kind, value, records): values shared by more records than
  ``max_cluster_size`` allows (``info@``, a family email), never used as links.

A value shared by too many records is dropped before linking; a component that still grows
beyond ``max_cluster_size`` through chains is not merged at all (its records stay single, with
status ``blocked``) and is reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from crmseg.backends.base import CANONICAL_SCHEMA
from crmseg.config import GoldenConfig, IdentityConfig
from crmseg.errors import ConfigError
from crmseg.identity.components import Scratch, connected_components
from crmseg.identity.golden import golden_customers, golden_parts, golden_view, record_order
from crmseg.sources.normalize import PhoneBook, distinct_phones, email_key, trimmed

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend

Progress = Callable[[str, float], None]

# The kind of link a person_key value makes: the business's own key, never too common to link.
PERSON_KEY = "person_key"
# Tables identity adds to the warehouse's crmseg schema (next to the canonical ones).
IDENTITY_TABLES = (
    "identity_map",
    "golden_customers",
    "identity_collapsed",
    "golden_merged",
    "identity_links",
    "identity_blocked",
    "identity_matches",
)


@dataclass
class Resolution:
    """What a resolution produced: expressions to materialise and how long each step took."""

    tables: dict[str, ir.Table]
    scratch: Scratch
    # name -> the view's expression over the written tables (``canonical(name)``)
    views: dict[str, Callable[[Callable[[str], ir.Table]], ir.Table]] = field(default_factory=dict)
    rounds: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    golden: ir.Table | None = None  # the golden profile over the inputs, before writing

    def close(self) -> None:
        self.scratch.close()


def phone_lookup(
    scratch: Scratch, customers: ir.Table, phones: PhoneBook, name: str = "phones"
) -> ir.Table | None:
    """(phone, country, e164) for the customers' distinct phones, as a scratch table."""
    import ibis

    distinct = scratch.backend.execute(distinct_phones(customers))
    if distinct.num_rows == 0:
        return None
    if "country" not in distinct.column_names:
        distinct = distinct.append_column("country", pa.nulls(distinct.num_rows, pa.string()))
    looked_up = phones.table(distinct).select(["phone", "country", "e164"])
    return scratch.put(name, ibis.memtable(looked_up))


def with_e164(customers: ir.Table, lookup: ir.Table) -> ir.Table:
    """``customers`` with ``e164``: their phone in E.164 where it parses, else null (an
    international number is looked up without the customer's country)."""
    import ibis

    country = customers.country if "country" in customers.columns else ibis.null("string")
    plus = trimmed(customers.phone).startswith("+")
    keyed = customers.mutate(_country=ibis.ifelse(plus, ibis.null("string"), country))
    return keyed.left_join(
        lookup,
        (keyed.phone == lookup.phone)
        & (keyed._country.fill_null("") == lookup.country.fill_null("")),
    )


def customer_phones(customers: ir.Table, lookup: ir.Table) -> ir.Table:
    """(customer_id, e164) for customers whose phone parses."""
    found = with_e164(customers.filter(customers.phone.notnull()), lookup)
    return found.filter(found.e164.notnull()).select("customer_id", e164=found.e164)


def linking_values(
    scratch: Scratch,
    backend: Backend,
    config: IdentityConfig,
    tables: Mapping[str, ir.Table],
    phones: PhoneBook,
) -> ir.Table:
    """(customer_id, kind, value): every normalised value that may link records."""
    import ibis

    customers = tables["customers"]
    parts: list[ir.Table] = []
    plus, dots = config.email_plus_addressing, config.email_ignore_dots
    if "email" in config.match_on and "email" in customers.columns:
        parts.append(
            customers.select(
                "customer_id",
                kind=ibis.literal("email"),
                value=email_key(customers.email, plus, dots),
            )
        )
    if "phone" in config.match_on and "phone" in customers.columns:
        lookup = phone_lookup(scratch, customers, phones)
        if lookup is not None:
            found = customer_phones(customers, lookup)
            parts.append(found.select("customer_id", kind=ibis.literal("phone"), value=found.e164))
    if "identifiers" in config.match_on and "identifiers" in tables:
        ids = tables["identifiers"]
        id_type = trimmed(ids.id_type).lower()
        if config.identifier_types is not None:
            ids = ids.filter(id_type.isin([t.lower() for t in config.identifier_types]))
            id_type = trimmed(ids.id_type).lower()
        # Alternate emails link with customers' emails; other types only with their own type.
        is_email = id_type == "email"
        value = ibis.ifelse(is_email, email_key(ids.id_value, plus, dots), trimmed(ids.id_value))
        parts.append(ids.select("customer_id", kind=id_type, value=value))
    if config.person_key is not None:
        key = trimmed(customers[config.person_key].cast("string"))
        parts.append(customers.select("customer_id", kind=ibis.literal(PERSON_KEY), value=key))
    if not parts:
        return customers.select(
            "customer_id", kind=ibis.literal("none"), value=ibis.null("string")
        ).limit(0)
    # No DISTINCT: repeats (a record listed twice) change no count of distinct records and
    # the edges are made distinct anyway; deduplicating 2M string rows cost seconds.
    union = parts[0] if len(parts) == 1 else ibis.union(*parts, distinct=False)
    return union.filter(union.customer_id.notnull() & union.value.notnull() & (union.value != ""))


def resolve(
    backend: Backend,
    config: IdentityConfig,
    tables: Mapping[str, ir.Table],
    phones: PhoneBook,
    extra_links: Callable[[Scratch, ir.Table], tuple[ir.Table, ir.Table]] | None = None,
    progress: Progress | None = None,
) -> Resolution:
    """Resolve the customer records of ``tables`` to people (see the module docstring).

    ``extra_links`` may add (customer_id, kind, value) rows and a report of them, e.g.
    Splink's matched pairs (stored as ``identity_matches``).
    Intermediate tables live in ``scratch`` until the caller materialises the result.
    """
    import ibis

    scratch = Scratch(backend)
    res = Resolution({}, scratch)
    clock = time.perf_counter()

    def lap(step: str, fraction: float) -> None:
        nonlocal clock
        now = time.perf_counter()
        res.timings[step] = now - clock
        clock = now
        if progress:
            progress(step, fraction)

    try:
        customers = tables["customers"]
        key_col = config.person_key
        check_person_key(backend, config, customers)
        values = scratch.put("values", linking_values(scratch, backend, config, tables, phones))
        lap("normalise", 0.3)
        limit = config.max_cluster_size
        # Read three times (blocked, shared, the report): computed once.
        counted = scratch.put(
            "counted",
            values.group_by("kind", "value").aggregate(records=values.customer_id.nunique()),
        )
        own = counted.kind == PERSON_KEY  # a person's own key links however many records
        blocked = counted.filter((counted.records > limit) & ~own)
        shared = counted.filter((counted.records >= 2) & ((counted.records <= limit) | own))
        links = values.semi_join(shared, ["kind", "value"])
        matches = None
        if extra_links is not None:
            extra, matches = extra_links(scratch, customers)
            links = ibis.union(links, extra.select("customer_id", "kind", "value"))
        links = scratch.put("links", links)
        lap("link", 0.4)
        edges = links.select("customer_id", value=links.kind + ":" + links.value)
        components, res.rounds = connected_components(scratch, edges)
        lap("components", 0.8)

        # The survivor: the earliest-created record of the component, ties by smallest id.
        # With a person_key, the person is named by it, and the size limit counts people as
        # the business knows them (a marketplace buyer's 40 per-order records are one).
        first = customers.filter(customers.customer_id.notnull())
        per_record: dict[str, ir.Value] = {}
        if "signup_at" in first.columns:
            per_record["signup_at"] = first.signup_at.min()
        if key_col is not None:
            key = trimmed(first[key_col].cast("string"))
            per_record["_pk"] = ibis.ifelse(key == "", ibis.null("string"), key).min()
        if per_record:
            first = first.group_by("customer_id").aggregate(**per_record)
        else:
            first = first.select("customer_id").distinct()
        members = components.join(first, "customer_id")
        members = members.mutate(_order=record_order(members, members.component))
        survivor = members.customer_id.argmin(members._order)
        if key_col is None:
            sizes = members.group_by("component").aggregate(
                size=members.customer_id.count(), key=survivor
            )
            sizes = sizes.mutate(people=sizes.size)
        else:
            sizes = members.group_by("component").aggregate(
                size=members.customer_id.count(),
                key=ibis.coalesce(members._pk.min(), survivor),
                people=ibis.coalesce(members._pk, members.customer_id).nunique(),
                keys=members._pk.nunique(),
            )
            sizes = scratch.put("sizes", sizes)
            _check_one_key(backend, config, sizes.filter(sizes.people <= limit), members)
        keyed = components.join(sizes, "component").select("customer_id", "key", "size", "people")
        if key_col is None:
            ids = first.select("customer_id", _pk=ibis.null("string"))
        else:
            ids = first.select("customer_id", "_pk")
        j = ids.left_join(keyed, "customer_id")
        merged = j.size.notnull() & (j.people <= limit)
        status = ibis.cases((merged, "merged"), (j.size.notnull(), "blocked"), else_="single")
        own_key = j.customer_id if key_col is None else ibis.coalesce(j._pk, j.customer_id)
        idmap = scratch.put(
            "map",
            j.select(
                customer_id=j.customer_id,
                customer_key=ibis.ifelse(merged, j.key, own_key),
                cluster_size=ibis.ifelse(merged, j.size, 1).cast("int64"),
                status=status,
                component_size=j.size.fill_null(1).cast("int64"),
            ),
        )
        if key_col is not None:
            _check_no_clash(backend, config, idmap, first)
        collapsed, merged = golden_parts(customers, idmap, config.golden, scratch.put)
        res.views = {"golden_customers": _golden}
        res.golden = golden_view(customers, collapsed, merged)
        res.tables = {
            "identity_map": idmap,
            "identity_collapsed": collapsed,
            "golden_merged": merged,
            "identity_links": links.join(
                idmap.filter(idmap.status != "single").select("customer_id"), "customer_id"
            )
            .select("customer_id", "kind", "value")
            .distinct(),
            "identity_blocked": blocked.select("kind", "value", "records"),
        }
        if matches is not None:
            res.tables["identity_matches"] = matches
        lap("survivors", 1.0)
    except BaseException:
        scratch.close()
        raise
    return res


def check_person_key(backend: Backend, config: IdentityConfig, customers: ir.Table) -> None:
    """Refuse a person_key that is not a customers column (with a did-you-mean), or that gives
    one record (customer_id) two different keys: which one names the person would be a guess."""
    column = config.person_key
    if column is None:
        return
    if column not in customers.columns:
        import difflib

        close = difflib.get_close_matches(column, customers.columns, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"customers has no column {column!r} to key people by{hint}", config._where
        )
    keyed = customers.select("customer_id", _pk=trimmed(customers[column].cast("string")))
    rows = keyed.filter(keyed.customer_id.notnull() & keyed._pk.notnull() & (keyed._pk != ""))
    per = rows.group_by("customer_id").aggregate(
        keys=rows._pk.nunique(), low=rows._pk.min(), high=rows._pk.max()
    )
    split = per.filter(per.keys > 1)
    shown = backend.execute(split.order_by("customer_id").limit(3)).to_pylist()
    if not shown:
        return
    found = backend.execute(split.count().as_table()).column(0)[0].as_py()
    examples = ", ".join(
        f"record {r['customer_id']!r} has {r['low']!r} and {r['high']!r}"
        + (f" (and {r['keys'] - 2} more)" if r["keys"] > 2 else "")
        for r in shown
    )
    more = f" ({found:,} records like this)" if found > 1 else ""
    raise ConfigError(
        f"{column!r} is not one value per record: {examples}{more}; a record belongs to one "
        "person: fix the customers source so each customer_id has one key",
        config._where,
    )


def _check_one_key(
    backend: Backend, config: IdentityConfig, sizes: ir.Table, members: ir.Table
) -> None:
    """Refuse a person_key that is not unique per person: records linked into one person (by
    email, phone, ...) that carry different keys."""
    split = sizes.filter(sizes.keys > 1)
    found = backend.execute(split.count().as_table()).column(0)[0].as_py()
    if not found:
        return
    first = split.order_by("key").limit(1)
    rows = members.semi_join(first, "component").filter(members._pk.notnull())
    rows = backend.execute(rows.order_by("_pk", "customer_id").select("customer_id", "_pk"))
    shown = ", ".join(f"record {r['customer_id']!r} has {r['_pk']!r}" for r in rows.to_pylist()[:3])
    more = f" ({found:,} people like this)" if found > 1 else ""
    raise ConfigError(
        f"{config.person_key!r} is not unique per person: records linked into one person "
        f"by {', '.join(config.match_on) or 'matching'} carry different keys: {shown}{more}; "
        "fix the data, or leave the linking value out of identity.match_on",
        config._where,
    )


def _check_no_clash(
    backend: Backend, config: IdentityConfig, idmap: ir.Table, records: ir.Table
) -> None:
    """Refuse a record without a person_key whose own id is another person's key: both would
    become one person downstream without being merged."""
    keys = records.filter(records._pk.notnull()).select(_k=records._pk).distinct()
    own = idmap.filter((idmap.status != "merged") & (idmap.customer_key == idmap.customer_id))
    bare = records.filter(records._pk.isnull()).select(_b=records.customer_id)
    own = own.semi_join(bare, own.customer_id == bare._b)
    clash = own.semi_join(keys, own.customer_key == keys._k).select("customer_id")
    rows = backend.execute(clash.order_by("customer_id").limit(3)).column(0).to_pylist()
    if rows:
        raise ConfigError(
            f"records without a {config.person_key!r} have ids that are other people's "
            f"{config.person_key!r}: {', '.join(map(repr, rows))}; give them a key, or make "
            "the two kinds of id distinct",
            config._where,
        )


def _golden(canonical: Callable[[str], ir.Table]) -> ir.Table:
    return golden_view(
        canonical("customers"), canonical("identity_collapsed"), canonical("golden_merged")
    )


def keyed_ids(ids: ir.Table, loaded: Mapping[str, ir.Table]) -> ir.Table:
    """A table of record ids (``customer_id``) as distinct person keys, when identity ran."""
    if "identity_map" not in loaded:
        return ids
    keyed = _keyed(ids.select(customer_id=ids.customer_id.cast("string")), loaded["identity_map"])
    return keyed.distinct()


def _keyed(table: ir.Table, idmap: ir.Table) -> ir.Table:
    """``table`` with customer_id replaced by the person's key (unknown ids unchanged)."""
    import ibis

    moved = idmap.filter(idmap.customer_key != idmap.customer_id).select(
        _cid=idmap.customer_id, _key=idmap.customer_key
    )
    j = table.left_join(moved, table.customer_id == moved._cid)
    return j.select(
        *[
            ibis.coalesce(j._key, j.customer_id).name(c) if c == "customer_id" else j[c]
            for c in table.columns
        ]
    )


def resolved_tables(loaded: Mapping[str, ir.Table]) -> dict[str, ir.Table]:
    """Canonical tables with every customer_id replaced by its person's key.

    ``loaded`` are the tables of the warehouse's crmseg schema; without an identity map (identity
    off, or data loaded by an older version) the canonical ones are returned unchanged.
    """
    from crmseg.sources.model import TABLES
    from crmseg.sources.streamed import stream_table, with_streamed

    canonical = {n: t for n, t in loaded.items() if n in TABLES}
    if "identity_map" not in loaded or "golden_customers" not in loaded:
        return with_streamed(canonical, loaded)
    idmap = loaded["identity_map"]
    out: dict[str, ir.Table] = {}
    for name, table in canonical.items():
        if name == "customers":
            out[name] = loaded["golden_customers"]
        elif "customer_id" in table.columns:
            out[name] = _keyed(table, idmap)
        else:
            out[name] = table
    # streamed rows name people by a person key or a record id; people the stream created
    # are records of their own
    streamed = {
        n: _keyed(t, idmap) if "customer_id" in t.columns and n != stream_table("customers") else t
        for n, t in loaded.items()
        if n.startswith("stream_")
    }
    return with_streamed(out, streamed)


def resolve_with_map(
    tables: Mapping[str, ir.Table], idmap: ir.Table, golden: GoldenConfig
) -> dict[str, ir.Table]:
    """Source tables resolved with an existing map (records it does not know stay single)."""
    out: dict[str, ir.Table] = {}
    for name, table in tables.items():
        if name == "customers":
            out[name] = golden_customers(table, idmap, golden)
        elif "customer_id" in table.columns:
            out[name] = _keyed(table, idmap)
        else:
            out[name] = table
    return out


def has_identity(backend: Backend) -> bool:
    return "identity_map" in backend.canonical_tables()


def identity_map(backend: Backend) -> ir.Table:
    return backend.table("identity_map", database=CANONICAL_SCHEMA)
