"""Data-quality checks on the canonical tables (planned, not yet written, or loaded).

Every check yields findings with a count of affected rows, the rows it was judged on, the rate
and a few example rows. A finding *fails* when its rate exceeds the check's ``max_rate``; a
failed finding at severity ``error`` stops a run before anything is written.

Row-level conditions of a table are counted in one aggregate query per table; duplicates,
unknown customers, stale consent, tracking drift and phones need one query each. Examples are
fetched only for findings that have any.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from crmseg.config import Config
from crmseg.errors import QualityError
from crmseg.sources.model import CHANNELS, CONSENT_STATUSES, TABLES
from crmseg.sources.normalize import EMAIL_PATTERN, PhoneBook, blank, trimmed
from crmseg.sources.pii import PII_COLUMNS, mask

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.backends.base import Backend

Progress = Callable[[str, float], None]

# (table, column) pairs whose negative values make no sense (margins may be negative).
NON_NEGATIVE = (
    ("orders", "amount"),
    ("orders", "discount"),
    ("orders", "returned_amount"),
    ("order_items", "price"),
    ("order_items", "quantity"),
    ("subscriptions", "mrr"),
    ("tickets", "refund_amount"),
    ("reviews", "score"),
)
# Money columns: a NaN or infinite value there is an error by default (non_finite_amounts).
MONEY = (*NON_NEGATIVE[:4], ("orders", "margin"), ("order_items", "price"),
         ("subscriptions", "mrr"), ("tickets", "refund_amount"))  # fmt: skip
BOUNDED = (("orders", "amount"), ("order_items", "price"), ("subscriptions", "mrr"))
# Columns allowed to be null although required (anonymous events have no customer).
NULLABLE = {("events", "customer_id")}


@dataclass
class Finding:
    """One check on one table (and column): how many rows are affected, with examples."""

    check: str
    table: str
    column: str | None
    affected: int
    total: int
    severity: str  # configured: warn, error
    max_rate: float
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.affected / self.total if self.total else 0.0

    @property
    def failed(self) -> bool:
        return self.affected > 0 and self.rate > self.max_rate

    @property
    def level(self) -> str:
        """ok, warn or error: the severity when the finding fails."""
        return self.severity if self.failed else "ok"

    @property
    def where(self) -> str:
        return f"{self.table}.{self.column}" if self.column else self.table

    def line(self) -> str:
        pct = f"{self.rate:.2%}" if self.total else "n/a"
        text = (
            f"{self.check} {self.where}: {self.affected:,} of {self.total:,} ({pct}) {self.message}"
        )
        if self.examples:
            text += "; e.g. " + json.dumps(self.examples[0], default=str)
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "table": self.table,
            "column": self.column,
            "affected": self.affected,
            "total": self.total,
            "rate": self.rate,
            "severity": self.severity,
            "level": self.level,
            "message": self.message,
            "examples": self.examples,
        }


@dataclass
class QualityReport:
    as_of: datetime
    findings: list[Finding]
    event_names: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warn"]

    def raise_for_errors(self) -> None:
        errors = self.errors
        if errors:
            lines = [
                f"data quality: {f.line()} (severity error; nothing was written)" for f in errors
            ]
            raise QualityError(lines)


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


class _Checker:
    def __init__(
        self,
        backend: Backend,
        config: Config,
        tables: Mapping[str, ir.Table],
        at: datetime,
        nonfinite: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.q = config.quality
        self.tables = tables
        self.at = at
        self.nonfinite = nonfinite or {}
        self.findings: list[Finding] = []
        self._examples: list[tuple[Finding, ir.Table]] = []

    def add(
        self,
        check: str,
        table: str,
        column: str | None,
        affected: int,
        total: int,
        message: str,
        rows: ir.Table | None = None,
    ) -> Finding | None:
        setting = self.q.check(check)
        if setting.severity == "off":
            return None
        finding = Finding(
            check,
            table,
            column,
            int(affected),
            int(total),
            setting.severity,
            setting.max_rate,
            message,
        )
        self.findings.append(finding)
        if affected and rows is not None and self.q.examples:
            self._examples.append((finding, rows))
        return finding

    def example_columns(self, table: str, expr: ir.Table, column: str | None) -> list[str]:
        spec = TABLES.get(table)
        wanted = [
            spec.key if spec else None,
            "customer_id",
            column,
            spec.time if spec else None,
        ]
        seen: list[str] = []
        for col in wanted:
            if col and col in expr.columns and col not in seen:
                seen.append(col)
        return seen or list(expr.columns[:5])

    def fetch_examples(self) -> None:
        for finding, rows in self._examples:
            # the first rows in the order of their columns: the same data gives the same
            # examples on every run and every engine (an unordered limit takes any rows)
            first = rows.order_by(list(rows.columns)).limit(self.q.examples)
            result = self.backend.execute(first)
            # Examples are stored with every run and printed: personal data is masked.
            finding.examples = [
                {
                    k: mask(_json(v)) if (finding.table, k) in PII_COLUMNS else _json(v)
                    for k, v in row.items()
                }
                for row in result.to_pylist()
            ]

    # --- row conditions, one aggregate per table --------------------------------------------

    def row_checks(self) -> None:
        import ibis

        at = ibis.literal(self.at)
        earliest = ibis.literal(self.q.earliest)
        for name, t in self.tables.items():
            spec = TABLES.get(name)
            if spec is None:
                continue
            conds: list[tuple[str, str | None, Any, str]] = []  # check, column, cond, message
            important = set(spec.required) | set(self.q.important.get(name, ()))
            for col in sorted(important, key=[c.name for c in spec.columns].index):
                if col not in t.columns or (name, col) in NULLABLE:
                    continue
                value = t[col]
                empty = value.isnull()
                if value.type().is_string():
                    empty = empty | blank(value)
                if (name, col) == ("consent", "channel") and "purpose" in t.columns:
                    empty = empty & t.purpose.isnull()  # a purpose row needs no channel
                conds.append(("missing_values", col, empty, "are missing"))
            if name == "customers" and "email" in t.columns:
                email = t.email.strip()
                bad = t.email.notnull() & (email != "") & ~email.re_search(EMAIL_PATTERN)
                conds.append(("invalid_emails", "email", bad, "are not valid email addresses"))
            if spec.time and spec.time in t.columns:
                ts = t[spec.time]
                conds.append(
                    ("future_timestamps", spec.time, ts > at, f"are after as_of ({self.at})")
                )
                conds.append(
                    (
                        "implausible_timestamps",
                        spec.time,
                        ts < earliest,
                        f"are before {self.q.earliest:%Y-%m-%d}",
                    )
                )
            for table, col in NON_NEGATIVE:
                if table == name and col in t.columns:
                    conds.append(("negative_amounts", col, t[col] < 0, "are negative"))
            for table, col in BOUNDED:
                if table == name and col in t.columns:
                    conds.append(
                        (
                            "absurd_amounts",
                            col,
                            t[col] > self.q.max_amount,
                            f"are above {self.q.max_amount:,.0f}",
                        )
                    )
            if name == "orders" and "currency" in t.columns:
                cur = t.currency.strip().upper()
                conds.append(
                    (
                        "currency_mismatch",
                        "currency",
                        t.currency.notnull() & (cur != self.config.currency.upper()),
                        f"are not in the reporting currency {self.config.currency}",
                    )
                )
            if name == "consent":
                purposes = tuple(sorted(self.config.privacy.bases()))
                for col, allowed in (
                    ("channel", CHANNELS),
                    ("status", CONSENT_STATUSES),
                    ("purpose", purposes),
                ):
                    if col in t.columns:
                        conds.append(
                            (
                                "unknown_consent_values",
                                col,
                                t[col].notnull() & ~t[col].isin(list(allowed)),
                                f"are not one of {', '.join(allowed)}",
                            )
                        )
            conds = [c for c in conds if self.q.check(c[0]).severity != "off"]
            if not conds:
                continue
            aggs = {
                f"c{i}": cond.fill_null(False).cast("int64").sum()
                for i, (_, _, cond, _) in enumerate(conds)
            }
            aggs["total"] = t.count()
            totals = self.backend.execute(t.aggregate(**aggs)).to_pylist()[0]
            for i, (check, column, cond, message) in enumerate(conds):
                rows = t.filter(cond.fill_null(False))
                rows = rows.select(*self.example_columns(name, t, column))
                self.add(
                    check, name, column, totals[f"c{i}"] or 0, totals["total"] or 0, message, rows
                )

    def non_finite(self) -> None:
        """NaN and infinite numbers the load found: they are loaded as missing, so the count
        comes with the load, and there are no rows left to show."""
        for table, columns in sorted(self.nonfinite.items()):
            if table not in self.tables:
                continue
            total: int | None = None
            for column, n in sorted(columns.items()):
                check = _non_finite_check(table, column)
                if self.q.check(check).severity == "off":
                    continue
                if total is None:
                    total = int(self.backend.scalar(self.tables[table].count()))
                self.add(check, table, column, n, total, "are NaN or infinite (loaded as missing)")

    # --- whole-table checks -----------------------------------------------------------------

    def duplicate_ids(self) -> None:
        customers = self.tables["customers"]
        counts = customers.group_by("customer_id").aggregate(n=customers.count())
        dup = counts.filter(counts.n > 1)
        stats = self.backend.execute(dup.aggregate(rows=dup.n.sum(), ids=dup.count())).to_pylist()[
            0
        ]
        total = int(self.backend.scalar(customers.count()) or 0)
        rows = customers.semi_join(dup, "customer_id").order_by("customer_id")
        rows = rows.select(*self.example_columns("customers", customers, None))
        self.add(
            "duplicate_customer_ids",
            "customers",
            "customer_id",
            int(stats["rows"] or 0),
            total,
            f"rows share their customer_id with another row ({int(stats['ids'] or 0):,} ids)",
            rows,
        )

    def unknown_customers(self) -> None:
        ids = self.tables["customers"].select("customer_id").distinct()
        for name, t in self.tables.items():
            if name == "customers" or name not in TABLES or "customer_id" not in t.columns:
                continue
            known = t.filter(t.customer_id.notnull())
            orphans = known.anti_join(ids, "customer_id")
            stats = self.backend.execute(
                known.aggregate(total=known.count()).cross_join(
                    orphans.aggregate(affected=orphans.count())
                )
            ).to_pylist()[0]
            rows = orphans.select(*self.example_columns(name, t, "customer_id"))
            self.add(
                "unknown_customers",
                name,
                "customer_id",
                stats["affected"] or 0,
                stats["total"] or 0,
                "reference a customer_id that is not in customers",
                rows,
            )

    def phones(self, phones: PhoneBook) -> None:
        import ibis

        customers = self.tables["customers"]
        if "phone" not in customers.columns or self.q.check("unparseable_phones").severity == "off":
            return
        country = customers.country if "country" in customers.columns else ibis.null("string")
        has = customers.filter(customers.phone.notnull() & ~blank(customers.phone))
        keyed = has.select(
            phone=has.phone,
            country=ibis.ifelse(trimmed(has.phone).startswith("+"), ibis.null("string"), country),
        )
        grouped = self.backend.execute(
            keyed.group_by("phone", "country").aggregate(n=keyed.count())
        )
        import pyarrow.compute as pc

        _, possible = phones.arrays(
            grouped.column("phone").combine_chunks(), grouped.column("country").combine_chunks()
        )
        failing = pc.invert(possible)  # unparseable numbers are never possible
        bad = pc.filter(grouped.column("phone"), failing).to_pylist()
        affected = int(pc.sum(pc.filter(grouped.column("n"), failing)).as_py() or 0)
        rows = has.filter(has.phone.isin(bad[: self.q.examples])) if bad else None
        if rows is not None:
            cols = self.example_columns("customers", has, "phone")
            rows = rows.select(*cols, *(["country"] if "country" in has.columns else []))
        self.add(
            "unparseable_phones",
            "customers",
            "phone",
            affected,
            int(pc.sum(grouped.column("n")).as_py() or 0),
            f"are not phone numbers of a plausible length (default region {phones.default_region})",
            rows,
        )

    def stale_consent(self) -> None:
        import ibis

        if "consent" not in self.tables or self.q.check("stale_consent").severity == "off":
            return
        t = self.tables["consent"]
        visible = t.filter(t.updated_at <= self.at)
        latest = visible.mutate(
            _rank=ibis.row_number().over(
                group_by=[
                    "customer_id",
                    "channel",
                    *(["purpose"] if "purpose" in t.columns else []),
                ],
                order_by=ibis.desc("updated_at"),
            )
        ).filter(ibis._._rank == 0)
        cutoff = _months_before(self.at, self.q.consent_max_age_months)
        stale = latest.filter((latest.status == "opted_in") & (latest.updated_at < cutoff))
        stats = self.backend.execute(
            latest.aggregate(total=latest.customer_id.nunique()).cross_join(
                stale.aggregate(affected=stale.customer_id.nunique())
            )
        ).to_pylist()[0]
        rows = stale.drop("_rank").order_by("updated_at")
        self.add(
            "stale_consent",
            "consent",
            "updated_at",
            stats["affected"] or 0,
            stats["total"] or 0,
            f"customers have an opt-in last confirmed more than "
            f"{self.q.consent_max_age_months} months ago (before {cutoff:%Y-%m-%d})",
            rows,
        )

    def tracking_drift(self, previous: set[str] | None) -> dict[str, int]:
        import ibis

        if "events" not in self.tables:
            return {}
        t = self.tables["events"]
        visible = t.filter(t.occurred_at <= self.at) if "occurred_at" in t.columns else t
        names = self.backend.execute(visible.group_by("name").aggregate(n=visible.count()))
        counts = {
            str(k): int(v)
            for k, v in zip(
                names.column("name").to_pylist(), names.column("n").to_pylist(), strict=True
            )
            if k is not None
        }
        if previous is None:
            return counts
        new = sorted(n for n in counts if n not in previous)
        total = sum(counts.values())
        rows = None
        if new:
            ranked = visible.filter(visible.name.isin(new)).mutate(
                _rank=ibis.row_number().over(group_by="name", order_by="occurred_at")
            )
            rows = ranked.filter(ranked._rank == 0).drop("_rank").order_by("name")
            rows = rows.select(*self.example_columns("events", t, "name"))
        self.add(
            "tracking_drift",
            "events",
            "name",
            sum(counts[n] for n in new),
            total,
            "events have a name the previous run never saw"
            + (f" ({', '.join(new[:5])}{', ...' if len(new) > 5 else ''})" if new else ""),
            rows,
        )
        return counts


def _months_before(at: datetime, months: int) -> datetime:
    import calendar

    year, month = divmod(at.year * 12 + at.month - 1 - months, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day)


def _non_finite_check(table: str, column: str) -> str:
    return "non_finite_amounts" if (table, column) in MONEY else "non_finite_numbers"


def non_finite_lines(
    config: Config, origins: Mapping[str, str], nonfinite: Mapping[str, Mapping[str, int]]
) -> list[tuple[str, str]]:
    """(severity, line) per column with NaN or infinite values, for ``validate``, which plans
    the sources without running the checks. ``origins``: table -> its file or table."""
    out: list[tuple[str, str]] = []
    for table, columns in sorted(nonfinite.items()):
        for column, n in sorted(columns.items()):
            check = _non_finite_check(table, column)
            severity = config.quality.check(check).severity
            if severity != "off":
                where = origins.get(table, table)
                out.append(
                    (severity, f"{where}: {check} {table}.{column}: {n} value"
                     f"{'s are' if n > 1 else ' is'} NaN or infinite (loaded as missing)")
                )  # fmt: skip
    return out


def check_quality(
    backend: Backend,
    config: Config,
    tables: Mapping[str, ir.Table],
    at: datetime,
    phones: PhoneBook | None = None,
    previous_event_names: set[str] | None = None,
    progress: Progress | None = None,
    nonfinite: Mapping[str, Mapping[str, int]] | None = None,
) -> QualityReport:
    """Run every enabled check on ``tables`` at ``at``; reads only, writes nothing.
    ``nonfinite``: table -> column -> NaN or infinite values found by the load."""
    checker = _Checker(backend, config, tables, at, nonfinite)
    book = phones or PhoneBook(config.identity.default_region)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("row checks", checker.row_checks),
        ("numbers", checker.non_finite),
        ("duplicate ids", checker.duplicate_ids),
        ("unknown customers", checker.unknown_customers),
        ("phones", lambda: checker.phones(book)),
        ("consent", checker.stale_consent),
    ]
    if config.quality.check("duplicate_customer_ids").severity == "off":
        steps.remove(("duplicate ids", checker.duplicate_ids))
    if config.quality.check("unknown_customers").severity == "off":
        steps.remove(("unknown customers", checker.unknown_customers))
    for i, (step, fn) in enumerate(steps):
        if progress:
            progress(f"quality: {step}", i / (len(steps) + 2))
        fn()
    names = checker.tracking_drift(previous_event_names)
    if progress:
        progress("quality: examples", (len(steps) + 1) / (len(steps) + 2))
    checker.fetch_examples()
    return QualityReport(at, checker.findings, names)
