"""Activating campaigns: audience, send log, exports and syncs, in that order.

Within one call every audience, send-log row, activation record, file-destination sync state
and outbox batch is written in one state-store transaction (all or nothing). Files are staged
and renamed into place after the commit; webhook batches are delivered after the commit from the
outbox, so a crash in between leaves batches that the next activation retries.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import pyarrow as pa

from crmseg.activation.audience import (
    SEND_LOG_SCHEMA,
    Audience,
    Compile,
    Members,
    build_audience,
    default_compile,
)
from crmseg.activation.campaigns import (
    RECORD_FIELDS,
    AdListDestination,
    Campaign,
    FileDestination,
    WebhookDestination,
)
from crmseg.activation.destinations.adlists import LAYOUTS, hash_email, hash_phone
from crmseg.activation.destinations.files import write_records
from crmseg.activation.destinations.webhook import post_batches
from crmseg.activation.store import ActivationStore, Batch
from crmseg.activation.sync import Diff, diff, make_batches, replace_synced
from crmseg.errors import ActivationError
from crmseg.rules import Definition

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend
    from crmseg.backends.state import StateStore


@dataclass
class DestinationReport:
    name: str
    kind: str
    target: str  # file path(s) or URL
    mode: str
    records: int = 0  # rows written (files) or customers in the diff (syncs)
    adds: int = 0
    removes: int = 0
    batches: int = 0
    delivered: int = 0
    failed: int = 0
    requests: int = 0
    error: str | None = None


@dataclass
class ActivationResult:
    campaign: str
    as_of: datetime
    dry_run: bool
    audience: Audience
    activation_id: int | None = None
    destinations: list[DestinationReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.error is None for d in self.destinations)

    def summary(self) -> dict[str, Any]:
        """The funnel, arm sizes and destination reports, JSON-able (no customer rows)."""
        from dataclasses import asdict

        return {
            "campaign": self.campaign,
            "as_of": self.as_of,
            "dry_run": self.dry_run,
            "activation_id": self.activation_id,
            "funnel": [{"step": s.label, "count": s.count} for s in self.audience.recorded],
            "treatment": len(self.audience.treatment),
            "holdout": len(self.audience.holdout),
            "destinations": [asdict(d) for d in self.destinations],
        }


@dataclass
class Context:
    """What an activation reads: the project's data, state and definitions."""

    root: Path
    backend: Backend
    tables: Mapping[str, ir.Table]
    state: StateStore
    members: Members
    compile: Compile | None = None  # the project's compiler (default library without it)
    purposes: Mapping[str, str] | None = None  # purpose -> legal basis (None: all consent)


def _dest_key(c: Campaign, name: str) -> str:
    return f"{c.name}/{name}"


def _expand(root: Path, template: str, c: Campaign, at: datetime, allow: bool = False) -> Path:
    """The output path of a template (validated: only ``{campaign}`` and ``{as_of}``); it must
    stay in the project folder, symbolic links followed, unless ``allow_outside_project``."""
    # An absolute template stays absolute: pathlib drops root for it.
    path = root / template.format(campaign=c.name, as_of=f"{at:%Y%m%dT%H%M%S}")
    if not allow and not path.resolve().is_relative_to(root.resolve()):
        raise ActivationError(
            f"{c.file}:{c.line}: campaign {c.name}: {template!r} leads to {path.resolve()}, "
            "outside the project folder (set allow_outside_project: true to allow it)"
        )
    return path


def activate(
    targets: Sequence[Campaign],
    catalog: Sequence[Campaign],
    ctx: Context,
    as_of: datetime,
    now: datetime,
    dry_run: bool = False,
) -> list[ActivationResult]:
    """Activate ``targets`` (in the given order) at ``as_of`` as one unit."""
    store = ActivationStore(ctx.state)
    if not dry_run:
        place_staged(store)  # a killed activation's committed files first
    for c in targets:
        previous = store.activation_at(c.name, as_of)
        if previous is not None and not dry_run:
            raise ActivationError(
                f"campaign {c.name} was already activated at {as_of:%Y-%m-%d %H:%M:%S} "
                f"(activation {previous}); activate at a later --as-of"
            )
    if not dry_run:
        _retry_pending(targets, ctx, store, now)
    results: list[ActivationResult] = []
    staged: list[tuple[Path, Path]] = []
    log = store.send_log()

    def audience_of(c: Campaign, sent: pa.Table) -> Audience:
        return build_audience(
            c, catalog, ctx.backend, ctx.tables, ctx.members, sent, as_of, ctx.compile,
            ctx.purposes,
        )  # fmt: skip

    try:
        if dry_run:
            for c in targets:
                audience = audience_of(c, log)
                result = ActivationResult(c.name, as_of, True, audience)
                result.destinations = _preview(c, audience, ctx, store)
                results.append(result)
                # later campaigns of the same call see these sends (caps, groups)
                log = pa.concat_tables([log, _log_rows(audience)])
            return results
        with ctx.state.transaction():
            for c in targets:
                audience = audience_of(c, log)
                aid = store.record(audience, c.hash, now)
                result = ActivationResult(c.name, as_of, False, audience, aid)
                result.destinations = _stage(c, audience, aid, ctx, store, staged, now)
                results.append(result)
                log = store.send_log()
            store.stage_files([(str(tmp), str(final)) for tmp, final in staged])
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise
    before_moving()
    for tmp, final in staged:
        os.replace(tmp, final)
    store.placed([(str(tmp), str(final)) for tmp, final in staged])
    for c, result in zip(targets, results, strict=True):
        _deliver(c, result, ctx, store, now)
    return results


def before_moving() -> None:
    """Runs after an activation committed and before its files move into place (the kill
    test stops the process here)."""


def place_staged(store: ActivationStore) -> None:
    """Move the export files of committed activations into place: a process killed between
    the commit and the move left them under their staging names (recorded in the commit)."""
    files = store.staged_files()
    for staged, final in files:
        if os.path.exists(staged):
            os.replace(staged, final)
    if files:
        store.placed(files)


def _log_rows(a: Audience) -> pa.Table:
    keys = [k for k, _ in a.treatment] + a.holdout
    return pa.table(
        {
            "campaign": [a.campaign] * len(keys),
            "customer_key": keys,
            "arm": ["treatment"] * len(a.treatment) + ["holdout"] * len(a.holdout),
            "variant": [v for _, v in a.treatment] + [None] * len(a.holdout),
            "channel": [a.channel] * len(keys),
            "sent_at": pa.array([a.as_of] * len(keys), pa.timestamp("us")),
        },
        schema=SEND_LOG_SCHEMA,
    )


# --- records -------------------------------------------------------------------------------


def _fields_needed(c: Campaign) -> list[str]:
    cols: list[str] = []
    for d in c.spec.destination:
        wanted: list[str] = []
        if isinstance(d, FileDestination | WebhookDestination):
            wanted = [f for f in d.fields if f not in RECORD_FIELDS]
        elif isinstance(d, AdListDestination):
            wanted = list(d.identifiers)
        cols += [f for f in wanted if f not in cols]
    return cols


_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")  # a trait's name, not an expression


def _customer_fields(
    c: Campaign, ctx: Context, keys: Sequence[str], at: datetime
) -> dict[str, dict[str, Any]]:
    """Each key's exported fields: customer columns, and traits (``nba.category``,
    ``ltv``, ...) at the activation's instant."""
    cols = _fields_needed(c)
    if not cols or not keys:
        return {}
    customers = ctx.tables["customers"]
    direct = [f for f in cols if f in customers.columns]
    traits = [f for f in cols if f not in customers.columns]
    plan = None
    # each trait field as a hidden trait: the checker resolves it as rules would
    hidden = [Definition(f"__field_{i}", "trait", text=f) for i, f in enumerate(traits)]
    if traits:
        plan = _field_plan(c, ctx, traits, hidden)
        _personal_traits(c, plan, hidden, traits)
    wanted = ibis.memtable(pa.table({"__k": pa.array(list(keys), pa.string())}))
    t = customers.select(
        __k=customers.customer_id.cast("string"), **{f: customers[f] for f in direct}
    )
    t = t.semi_join(wanted, "__k")
    rows = {str(r.pop("__k")): r for r in ctx.backend.execute(t).to_pylist()}
    if plan is not None:
        wide = plan.wide(ctx.tables, at, select=[d.name for d in hidden])
        w = wide.select(
            __k=wide.customer_id.cast("string"),
            **{f: wide[d.name] for f, d in zip(traits, hidden, strict=True)},
        )
        for r in ctx.backend.execute(w.semi_join(wanted, "__k")).to_pylist():
            rows.setdefault(str(r.pop("__k")), {}).update(r)
    return rows


def _field_plan(
    c: Campaign, ctx: Context, traits: Sequence[str], hidden: Sequence[Definition]
) -> Any:
    """The project's plan with each trait field as a hidden trait; a field that is not a
    trait's name is an error naming that field (and the checker's hint)."""
    from crmseg.errors import RuleErrors

    compile_ = ctx.compile or default_compile()
    where = f"{c.file}:{c.line}: campaign {c.name}: field"
    for f in traits:
        if not _NAME.fullmatch(f):
            raise ActivationError(f"{where} {f!r} is neither a customer column, a trait, nor "
                                  f"one of {', '.join(RECORD_FIELDS)}")  # fmt: skip
    try:
        return compile_(ctx.tables, list(hidden))
    except RuleErrors:
        pass
    for f, d in zip(traits, hidden, strict=True):  # which one: compile each alone
        try:
            compile_(ctx.tables, [d])
        except RuleErrors as exc:
            why = str(exc.errors[0].message) if exc.errors else str(exc)
            raise ActivationError(
                f"{where} {f!r} is neither a customer column, a trait, nor one of "
                f"{', '.join(RECORD_FIELDS)}: {why}"
            ) from None
    raise ActivationError(f"{where}s {', '.join(traits)} do not compile together")


def _personal_traits(
    c: Campaign, plan: Any, hidden: Sequence[Definition], traits: Sequence[str]
) -> None:
    """A trait that reads personal data (``email``, a review's text) exports it: each
    destination must list that column under ``pii`` as it would the column itself."""
    from crmseg.rules import ast as A
    from crmseg.sources.pii import PII_COLUMNS

    for f, d in zip(traits, hidden, strict=True):
        personal: set[str] = set()
        for key in plan.closure([d.name]):
            node = plan.checked[key].node
            for n in A.walk(node) if node is not None else []:
                if isinstance(n, A.Attr) and ("customers", n.col) in PII_COLUMNS:
                    personal.add(n.col)
                elif isinstance(n, A.Col | A.Agg) and (n.table, n.col) in PII_COLUMNS:
                    personal.add(f"{n.table}.{n.col}")
        for dest in c.spec.destination:
            if not isinstance(dest, FileDestination | WebhookDestination) or f not in dest.fields:
                continue
            unlisted = sorted(p for p in personal if p.rsplit(".", 1)[-1] not in dest.pii)
            if unlisted:
                raise ActivationError(
                    f"{c.file}:{c.line}: campaign {c.name}: field {f!r} reads personal data "
                    f"({', '.join(unlisted)}): list it under 'pii' of destination "
                    f"{dest.name or dest.type!r} to export it"
                )


def _records(
    a: Audience, people: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    variants = dict(a.treatment)
    out = []
    for key in keys if keys is not None else [k for k, _ in a.treatment]:
        rec: dict[str, Any] = {
            "customer_key": key,
            "campaign": a.campaign,
            "arm": "treatment",
            "variant": variants.get(key),
            "channel": a.channel,
            "sent_at": a.as_of,
        }
        rec.update(people.get(key, {}))
        out.append(rec)
    return out


def _ad_rows(
    d: AdListDestination, people: Mapping[str, Mapping[str, Any]], keys: Sequence[str]
) -> tuple[list[str], list[dict[str, Any]]]:
    layout = LAYOUTS[d.platform]
    header = [layout[i] for i in d.identifiers]
    rows = []
    for key in keys:
        p = people.get(key, {})
        row: dict[str, Any] = {}
        if "email" in d.identifiers:
            row[layout["email"]] = hash_email(p.get("email"))
        if "phone" in d.identifiers:
            row[layout["phone"]] = hash_phone(p.get("phone"), d.default_region, d.platform)
        if any(v is not None for v in row.values()):  # a row with nothing to match is noise
            rows.append(row)
    return header, rows


# --- staging (inside the transaction) -----------------------------------------------------


def _stage(
    c: Campaign,
    a: Audience,
    aid: int,
    ctx: Context,
    store: ActivationStore,
    staged: list[tuple[Path, Path]],
    now: datetime,
) -> list[DestinationReport]:
    target = [k for k, _ in a.treatment]
    reports = []
    people: dict[str, dict[str, Any]] | None = None
    for d in c.spec.destination:
        name = d.name or d.type
        key = _dest_key(c, name)
        receives = _receivers(a, d, target)
        change = diff(store, key, receives) if d.sync == "incremental" else Diff(receives, [])
        if people is None:
            people = _customer_fields(c, ctx, sorted(set(target) | set(change.removes)), a.as_of)
        elif missing := sorted(set(change.removes) - set(people)):
            people.update(_customer_fields(c, ctx, missing, a.as_of))
        report = DestinationReport(name, d.type, "", d.sync, adds=len(change.adds))
        report.removes = len(change.removes)
        if isinstance(d, WebhookDestination):
            report.target = d.url
            # checked before the commit: delivery after it must not fail on the path
            _expand(ctx.root, d.dead_letter, c, now, d.allow_outside_project)
            batches = make_batches(key, aid, change, d.batch_size, _webhook_body(c, a, d, people))
            store.add_batches(batches, now)
            report.batches = len(batches)
            report.records = len(change.adds) + len(change.removes)
        elif isinstance(d, FileDestination):
            path = _expand(ctx.root, d.path, c, a.as_of, d.allow_outside_project)
            report.target = str(path)
            if d.sync == "incremental":
                recs = _records(a, people, change.adds)
                for r in recs:
                    r["op"] = "add"
                recs += [{"customer_key": k, "op": "remove"} for k in change.removes]
                fields = [*d.fields, "op"]
            else:
                recs, fields = _records(a, people, receives), list(d.fields)
            _stage_file(
                path, staged, lambda p, r=recs, f=fields, d=d: write_records(p, d.file_format, r, f)
            )
            report.records = len(recs)
        else:
            report.target, report.records = _stage_ad_list(c, a, d, change, people, ctx, staged)
        if not isinstance(d, WebhookDestination):
            replace_synced(store, key, receives, now)
        reports.append(report)
    return reports


def _receivers(a: Audience, d: Any, target: list[str]) -> list[str]:
    """Who a destination may receive: an ad list only treatment customers with ads consent,
    a destination with a purpose only those who pass it."""
    if d.purpose is not None:
        allowed = a.purpose_ok.get(d.name or d.type, set())
        target = [k for k in target if k in allowed]
    if not isinstance(d, AdListDestination):
        return target
    consented = a.ads_consent or set()
    return [k for k in target if k in consented]


def _stage_file(path: Path, staged: list[tuple[Path, Path]], write: Any) -> None:
    tmp = path.with_name(f".{path.name}.staged")
    write(tmp)
    staged.append((tmp, path))


def _stage_ad_list(
    c: Campaign,
    a: Audience,
    d: AdListDestination,
    change: Diff,
    people: Mapping[str, Mapping[str, Any]],
    ctx: Context,
    staged: list[tuple[Path, Path]],
) -> tuple[str, int]:
    leaked = set(change.adds) - (a.ads_consent or set())
    if leaked:  # cannot happen unless the funnel is broken; never upload in that case
        raise ActivationError(
            f"campaign {c.name}: {len(leaked)} customers without ads consent reached the ad "
            f"list {d.name or d.type}; nothing was written"
        )
    path = _expand(ctx.root, d.path, c, a.as_of, d.allow_outside_project)
    parts = (
        [(path, change.adds)]
        if d.sync == "full"
        else [
            (path.with_name(f"{path.stem}.add{path.suffix or '.csv'}"), change.adds),
            (path.with_name(f"{path.stem}.remove{path.suffix or '.csv'}"), change.removes),
        ]
    )
    total = 0
    for p, keys in parts:
        header, rows = _ad_rows(d, people, keys)
        _stage_file(p, staged, lambda t, r=rows, h=header: write_records(t, "csv", r, h))
        total += len(rows)
    return ", ".join(str(p) for p, _ in parts), total


def _webhook_body(
    c: Campaign, a: Audience, d: WebhookDestination, people: Mapping[str, Mapping[str, Any]]
) -> Any:
    def body(op: str, bid: str, keys: list[str]) -> dict[str, Any]:
        if op == "add":
            records = [{f: r.get(f) for f in d.fields} for r in _records(a, people, keys)]
        else:  # a removal needs no personal data
            records = [{"customer_key": k} for k in keys]
        return {
            "campaign": c.name,
            "destination": d.name or d.type,
            "batch_id": bid,
            "op": op,
            "as_of": a.as_of.isoformat(),
            "records": records,
        }

    return body


def _preview(
    c: Campaign, a: Audience, ctx: Context, store: ActivationStore
) -> list[DestinationReport]:
    target = [k for k, _ in a.treatment]
    out = []
    for d in c.spec.destination:
        name = d.name or d.type
        receives = _receivers(a, d, target)
        change = diff(store, _dest_key(c, name), receives) if d.sync == "incremental" else None
        where = (
            d.url
            if isinstance(d, WebhookDestination)
            else str(_expand(ctx.root, d.path, c, a.as_of, d.allow_outside_project))
        )
        report = DestinationReport(name, d.type, where, d.sync)
        report.adds = len(change.adds) if change else len(receives)
        report.removes = len(change.removes) if change else 0
        report.records = report.adds + report.removes
        out.append(report)
    return out


# --- delivery (after the commit) -----------------------------------------------------------


def _send(
    c: Campaign,
    d: WebhookDestination,
    batches: Sequence[Batch],
    ctx: Context,
    store: ActivationStore,
    now: datetime,
) -> tuple[int, int, int, str | None]:
    res = post_batches(
        d.url,
        batches,
        max_attempts=d.max_attempts,
        backoff_seconds=d.backoff_seconds,
        timeout_seconds=d.timeout_seconds,
        headers=d.headers,
        dead_letter=_expand(ctx.root, d.dead_letter, c, now, d.allow_outside_project),
        on_delivered=lambda b, n: store.delivered(b, n, now),
        on_failed=lambda b, n: store.failed(b, n),
    )
    return len(res.delivered), len(res.failed), res.requests, res.error


def _deliver(
    c: Campaign, result: ActivationResult, ctx: Context, store: ActivationStore, now: datetime
) -> None:
    for d, report in zip(c.spec.destination, result.destinations, strict=True):
        if not isinstance(d, WebhookDestination):
            continue
        pending = store.pending(_dest_key(c, report.name))
        delivered, failed, requests, error = _send(c, d, pending, ctx, store, now)
        report.delivered += delivered
        report.failed += failed
        report.requests += requests
        if error:
            left = len(pending) - delivered
            dead = _expand(ctx.root, d.dead_letter, c, now, d.allow_outside_project)
            report.error = (
                f"{error}; {left} batch(es) left pending, retried on the next activation "
                f"(dead letter: {dead})"
            )


def _retry_pending(
    targets: Sequence[Campaign], ctx: Context, store: ActivationStore, now: datetime
) -> None:
    """Deliver what earlier activations left in the outbox, before a new diff is taken."""
    for c in targets:
        for d in c.spec.destination:
            if isinstance(d, WebhookDestination):
                pending = store.pending(_dest_key(c, d.name or d.type))
                if pending:
                    _send(c, d, pending, ctx, store, now)
