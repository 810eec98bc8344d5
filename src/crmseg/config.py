"""Project configuration (``crmseg.yml``) and the YAML loading every project file shares.

All YAML files are validated by pydantic models with ``extra="forbid"``; a problem is reported
as a :class:`~crmseg.errors.ConfigError` naming the file, line, column and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from crmseg.errors import ConfigError, Location
from crmseg.sources.model import PURPOSES, RETAINABLE, TABLES

PROJECT_FILE = "crmseg.yml"
DEFAULT_LAYERS = (
    "lifecycle",
    "value",
    "behavior",
    "risk",
    "preference",
    "demographic",
    "suppress",
    "custom",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# which settings each engine reads (the rest are refused for it, so a typo cannot pass)
BACKEND_FIELDS = {
    "duckdb": {"path", "threads", "memory_limit", "sql_dialect"},
    "postgres": {"host", "port", "database", "user", "password_env", "sql_dialect"},
    "pyspark": {"path", "master", "conf", "sql_dialect"},
}
# any other Ibis backend (SQLite, Snowflake, BigQuery, ...): see crmseg.backends.generic
OTHER_BACKEND_FIELDS = {"path", "connect", "password_env", "sql_dialect"}
SECRET_WORDS = ("password", "passwd", "secret", "token", "private_key", "credentials")


class BackendConfig(Strict):
    kind: str = Field(
        "duckdb",
        description="duckdb, postgres, pyspark, or the name of another Ibis backend (sqlite, "
        "snowflake, bigquery, trino, ...)",
    )
    path: str = Field(
        ".crmseg/warehouse.duckdb",
        description="warehouse file (DuckDB; another Ibis backend's database file, e.g. "
        "SQLite's) or folder (PySpark, default .crmseg/spark), project-relative",
    )
    threads: int | None = Field(None, ge=1, description="DuckDB threads (default: all cores)")
    memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. '8GB'")
    host: str = Field("127.0.0.1", description="Postgres host")
    port: int = Field(5432, ge=1, le=65535, description="Postgres port")
    database: str | None = Field(None, description="Postgres database (default: the user's)")
    user: str | None = Field(None, description="Postgres user (default: the login name)")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the password of Postgres or another Ibis "
        "backend (never in the file)",
    )

    connect: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of Ibis's connect for another Ibis backend (account, "
        "project_id, warehouse, ...); the password comes from password_env",
    )

    master: str = Field("local[*]", description="Spark master URL (PySpark)")
    conf: dict[str, str] = Field(
        default_factory=dict, description="Spark settings, e.g. spark.driver.memory (PySpark)"
    )

    sql_dialect: str | None = Field(
        None,
        description="the SQL dialect sql: segments and sources are written in (default: the "
        "engine's own); they are transpiled to the engine's with sqlglot",
    )

    @field_validator("sql_dialect")
    @classmethod
    def _dialect(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import sqlglot

        try:
            sqlglot.Dialect.get_or_raise(value)
        except ValueError:
            known = ", ".join(sorted(d.value for d in sqlglot.Dialects if d.value))
            raise ValueError(f"unknown SQL dialect {value!r}; known: {known}") from None
        return value

    @field_validator("connect")
    @classmethod
    def _no_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        # a project file is committed and shown; secrets come from the environment
        for key in value:
            if any(word in key.lower() for word in SECRET_WORDS):
                raise ValueError(
                    f"{key!r} looks like a secret: keep it out of the file and name the "
                    "environment variable that holds the password in password_env"
                )
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value in BACKEND_FIELDS:
            return value
        from importlib.metadata import entry_points

        known = sorted(e.name for e in entry_points(group="ibis.backends"))
        if value not in known:
            raise ValueError(
                f"unknown backend {value!r}; expected duckdb, postgres, pyspark or another "
                f"Ibis backend ({', '.join(k for k in known if k not in BACKEND_FIELDS)})"
            )
        return value

    @model_validator(mode="after")
    def _for_kind(self) -> BackendConfig:
        allowed = BACKEND_FIELDS.get(self.kind, OTHER_BACKEND_FIELDS) | {"kind"}
        for name in sorted(self.model_fields_set - allowed):
            raise ValueError(f"{name!r} is not a setting of the {self.kind} backend")
        if self.kind == "pyspark" and "path" not in self.model_fields_set:
            object.__setattr__(self, "path", ".crmseg/spark")  # the kind's default (frozen)
        return self

    @field_validator("memory_limit")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        units = "B|KB|MB|GB|TB|KiB|MiB|GiB|TiB"
        if value is not None and not re.fullmatch(rf"\s*\d+(\.\d+)?\s*({units})\s*", value, re.I):
            raise ValueError(f"expected a size like 512MB or 8GB, got {value!r}")
        return value


STATE_FIELDS = {
    "duckdb": {"path"},
    "postgres": {"host", "port", "database", "user", "password_env", "db_schema"},
}


class StateConfig(Strict):
    """Where crmseg keeps its records: a DuckDB file (one process at a time) or a schema of a
    PostgreSQL database (several processes write and read it)."""

    kind: Literal["duckdb", "postgres"] = "duckdb"
    path: str = Field(".crmseg/state.duckdb", description="state database, project-relative")
    host: str = Field("127.0.0.1", description="Postgres host")
    port: int = Field(5432, ge=1, le=65535, description="Postgres port")
    database: str | None = Field(None, description="Postgres database (default: the user's)")
    user: str | None = Field(None, description="Postgres user (default: the login name)")
    password_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the Postgres password (never in the file)",
    )
    db_schema: str = Field(
        "crmseg_state",
        alias="schema",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Postgres schema holding the state's tables (created when missing)",
    )

    @model_validator(mode="after")
    def _for_kind(self) -> StateConfig:
        allowed = STATE_FIELDS[self.kind] | {"kind"}
        for name in sorted(self.model_fields_set - allowed):
            shown = "schema" if name == "db_schema" else name
            raise ValueError(f"{shown!r} is not a setting of the {self.kind} state")
        return self


class Constant(Strict):
    """A column every row of a source has the same value in: ``id_type: {value: device}``."""

    value: str | int | float | bool


class InputConfig(Strict):
    """A raw input that ``sql:`` sources read by name: a file or a backend table, as it is."""

    path: str | None = Field(None, description="CSV or Parquet file or glob, project-relative")
    table: str | None = Field(None, description="a table in the backend database")
    format: Literal["csv", "parquet"] | None = Field(
        None, description="file format (default: from the file extension)"
    )
    delimiter: str | None = Field(
        None, min_length=1, description="CSV delimiter, one character, or 'whitespace'"
    )
    _where: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _one_location(self) -> InputConfig:
        if (self.path is None) == (self.table is None):
            raise ValueError("give exactly one of 'path' (a file) or 'table' (a backend table)")
        return self

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        return _delimiter(value)

    @property
    def file_format(self) -> Literal["csv", "parquet"]:
        return _file_format(self.format, self.path)

    @property
    def named_at(self) -> str:
        return f" (set at {self._where})" if self._where else ""


def _delimiter(value: str | None) -> str | None:
    if value is not None and len(value) != 1 and value != "whitespace":
        raise ValueError(f"expected one character or 'whitespace', got {value!r}")
    return value


def _file_format(
    given: Literal["csv", "parquet"] | None, path: str | None
) -> Literal["csv", "parquet"]:
    if given:
        return given
    assert path is not None
    return "parquet" if path.lower().endswith((".parquet", ".pq")) else "csv"


class SourceConfig(Strict):
    """One canonical table: a file (CSV/Parquet, globs allowed), a table in the backend, a
    query over raw inputs, or (customers) derived from another source."""

    path: str | None = Field(None, description="CSV or Parquet file or glob, project-relative")
    table: str | None = Field(None, description="a table in the backend database, e.g. raw.events")
    derive: str | None = Field(
        None,
        description="customers only: one customer per distinct customer_id of this source "
        "(e.g. orders), signed up at their first row there",
    )
    sql: str | None = Field(
        None,
        description="a query over the project's inputs (by name) giving this table's rows, "
        "e.g. select o.*, p.total as amount from raw_orders o join payments p using (order_id)",
    )
    # Where crmseg.yml names the file or table, for messages about reading it.
    _where: str | None = PrivateAttr(None)
    # Where each column mapping is written (ours -> crmseg.yml:24:15), for messages about it.
    _columns_at: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("path", "table")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("expected a file path or table name, got an empty one")
        return value

    @property
    def named_at(self) -> str:
        """`` (set at crmseg.yml:7)`` where the path or table is set; empty when not known."""
        return f" (set at {self._where})" if self._where else ""

    def mapping_at(self, column: str) -> str:
        """`` (set at crmseg.yml:24:15)`` where the mapping of ``column`` (ours) is written;
        where the source is named when the mapping is implicit or its place unknown."""
        at = self._columns_at.get(column)
        return f" (set at {at})" if at else self.named_at

    format: Literal["csv", "parquet"] | None = Field(
        None, description="file format (default: from the file extension)"
    )
    delimiter: str | None = Field(
        None,
        min_length=1,
        description="CSV delimiter, one character, or 'whitespace' for columns separated by "
        "runs of spaces or tabs (default: detected)",
    )
    columns: dict[str, str | Constant] = Field(
        default_factory=dict,
        description="column mapping, ours: theirs, or ours: {value: a constant}",
    )
    timezone: str | None = Field(
        None, description="timezone of naive timestamps in this source (default: project's)"
    )
    decimal: Literal[".", ","] = Field(
        ".",
        description="decimal separator of numbers written as text: ',' reads 1.234,56 as 1234.56",
    )
    formats: dict[str, str] = Field(
        default_factory=dict,
        description="timestamp or date column (ours) -> its strptime format, e.g. %m/%d/%Y %H:%M",
    )

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str | None) -> str | None:
        return _delimiter(value)

    @field_validator("formats")
    @classmethod
    def _formats(cls, value: dict[str, str]) -> dict[str, str]:
        for column, fmt in value.items():
            if "%" not in fmt:
                raise ValueError(
                    f"formats.{column}: expected a strptime format such as %d/%m/%Y %H:%M, "
                    f"got {fmt!r}"
                )
        return value

    @model_validator(mode="after")
    def _one_location(self) -> SourceConfig:
        if sum(v is not None for v in (self.path, self.table, self.derive, self.sql)) != 1:
            raise ValueError(
                "give exactly one of 'path' (a file), 'table' (a backend table), 'sql' (a query "
                "over inputs) or 'derive' (customers from another source)"
            )
        return self

    @property
    def file_format(self) -> Literal["csv", "parquet"]:
        return _file_format(self.format, self.path)


# --- quality and identity ------------------------------------------------------------------

Severity = Literal["warn", "error", "off"]
QUALITY_CHECKS = (
    "missing_values",
    "invalid_emails",
    "unparseable_phones",
    "duplicate_customer_ids",
    "unknown_customers",
    "future_timestamps",
    "implausible_timestamps",
    "negative_amounts",
    "absurd_amounts",
    "non_finite_amounts",
    "non_finite_numbers",
    "currency_mismatch",
    "unknown_consent_values",
    "stale_consent",
    "tracking_drift",
)


# Checks that stop a run unless configured otherwise (a NaN amount changes who is a VIP).
_ERROR_BY_DEFAULT = {"non_finite_amounts"}
_IMPORTANT: dict[str, tuple[str, ...]] = {"customers": ("email", "country", "signup_at")}


class QualityCheckConfig(Strict):
    """How one data-quality check is judged."""

    severity: Severity = Field("warn", description="warn, error (stops the run) or off")
    max_rate: float = Field(
        0.0, ge=0, le=1, description="share of affected rows tolerated before it counts"
    )


class QualityConfig(Strict):
    enabled: bool = Field(True, description="run the checks before every run")
    checks: dict[str, QualityCheckConfig] = Field(
        default_factory=dict, description="check name -> severity and tolerated rate"
    )
    important: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(_IMPORTANT),
        description="table -> columns whose missing values are reported (besides required ones)",
    )
    consent_max_age_months: int = Field(
        24, ge=1, description="opt-ins last confirmed longer ago than this are stale"
    )
    earliest: datetime = Field(
        datetime(1990, 1, 1), description="timestamps before this are implausible"
    )
    max_amount: float = Field(100_000.0, gt=0, description="order amounts above this are absurd")
    examples: int = Field(5, ge=0, le=100, description="example rows kept per finding")

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, QualityCheckConfig]) -> dict[str, QualityCheckConfig]:
        for name in value:
            if name not in QUALITY_CHECKS:
                raise ValueError(
                    f"unknown quality check {name!r} (expected one of: {', '.join(QUALITY_CHECKS)})"
                )
        return value

    @field_validator("important")
    @classmethod
    def _known_columns(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for table, columns in value.items():
            if table not in TABLES:
                raise ValueError(f"unknown table {table!r} (expected one of: {', '.join(TABLES)})")
            for col in columns:
                if TABLES[table].column(col) is None:
                    raise ValueError(f"{table}: {col!r} is not a column of the canonical table")
        return value

    def check(self, name: str) -> QualityCheckConfig:
        default = "error" if name in _ERROR_BY_DEFAULT else "warn"
        return self.checks.get(name, QualityCheckConfig(severity=default))


Survivorship = Literal["most_recent", "most_frequent", "earliest", "source_priority"]


class GoldenConfig(Strict):
    """Which record's value a resolved person's golden profile keeps, per attribute."""

    default: Survivorship = Field("most_recent", description="rule for attributes not listed")
    attributes: dict[str, Survivorship] = Field(
        default_factory=dict, description="customers column -> survivorship rule"
    )
    source_column: str | None = Field(
        None, description="customers column naming a record's system (for source_priority)"
    )
    source_priority: tuple[str, ...] = Field(
        (), description="values of source_column, most trusted first"
    )

    @model_validator(mode="after")
    def _priority_needs_source(self) -> GoldenConfig:
        uses = self.default == "source_priority" or "source_priority" in self.attributes.values()
        if uses and (self.source_column is None or not self.source_priority):
            raise ValueError("source_priority needs source_column and source_priority")
        return self


class SplinkConfig(Strict):
    """Probabilistic matching with Splink (optional extra ``identity``)."""

    enabled: bool = Field(False, description="add Splink matches to the deterministic ones")
    threshold: float = Field(
        0.999, gt=0, lt=1, description="match probability at which two records are merged"
    )
    blocking: tuple[tuple[str, ...], ...] = Field(
        (("last_name", "first_name"), ("last_name", "birth_date"), ("first_name", "birth_date")),
        description="blocking rules: records are compared when all these columns are equal",
    )
    max_pairs: int = Field(
        1_000_000, ge=1000, description="random pairs sampled to estimate u probabilities"
    )
    seed: int = Field(42, description="sampling seed, for reproducible models")
    engine: Literal["local", "warehouse"] = Field(
        "local",
        description="where Splink compares: `local` pulls the compared columns into an "
        "in-process DuckDB (the same links on every engine); `warehouse` runs Splink's own "
        "API on the backend's engine (pyspark; duckdb is already local)",
    )


class ScheduleConfig(Strict):
    """How ``crmseg serve`` keeps segments fresh."""

    enabled: bool = Field(True, description="run due segments and campaigns while serving")
    check_seconds: int = Field(60, ge=1, le=3600, description="how often to look for due work")
    grace_minutes: int = Field(
        30, ge=0, description="a due run not finished this long after it was due is stale"
    )
    retry_max_minutes: int = Field(
        60, ge=1, description="longest wait before retrying a failed scheduled run"
    )
    activate: bool = Field(True, description="also activate campaigns due by their schedule")


class StreamWebhook(Strict):
    """Where ``crmseg serve`` delivers real-time entries and exits (from the change log)."""

    name: str = Field(description="lower_snake_case; its delivery cursor is kept under it")
    url: str = Field(description="an http(s) URL receiving POSTed JSON batches")
    segments: list[str] = Field(
        default_factory=list, description="only changes of these segments (default: all)"
    )
    batch_size: int = Field(500, ge=1, le=10_000, description="changes per POST")
    max_attempts: int = Field(5, ge=1, le=20, description="tries per batch before giving up")
    timeout_seconds: float = Field(10.0, gt=0, le=300, description="per request")

    @field_validator("name")
    @classmethod
    def _snake(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError(f"webhook names are lower_snake_case, got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class StreamConfig(Strict):
    """Real time (``crmseg stream``, ``POST /events``): see docs/realtime.md."""

    unknown_people: Literal["create", "reject"] = Field(
        "create",
        description="an item naming nobody known creates a new person, or is refused",
    )
    batch_ms: int = Field(
        100, ge=1, le=60_000, description="longest wait to gather items into one evaluation"
    )
    sweep_seconds: int = Field(
        60,
        ge=1,
        le=86_400,
        description="how often segments whose time-driven changes cannot be scheduled exactly "
        "(population-wide ranks, model scores, data-derived thresholds) are re-evaluated",
    )
    max_pending: int = Field(
        20_000,
        ge=1,
        description="items stored but not yet evaluated before 429s begin (it bounds how "
        "late a trigger can be: about this many items' evaluation)",
    )
    webhooks: list[StreamWebhook] = Field(
        default_factory=list, description="receivers of entries and exits (crmseg serve)"
    )


class IdentityConfig(Strict):
    enabled: bool = Field(True, description="resolve customer records to people before traits")
    match_on: tuple[Literal["email", "phone", "identifiers"], ...] = Field(
        ("email", "phone", "identifiers"), description="deterministic links"
    )
    identifier_types: tuple[str, ...] | None = Field(
        None, description="id_type values of the identifiers table that link (default: all)"
    )
    default_region: str = Field(
        "DE", description="region for phone numbers without country code or customer country"
    )
    email_plus_addressing: bool = Field(
        False, description="drop '+tag' from the local part before matching"
    )
    email_ignore_dots: bool = Field(False, description="drop dots from the local part")
    max_cluster_size: int = Field(
        20, ge=2, le=1000, description="larger clusters (shared emails, info@) are not merged"
    )
    person_key: str | None = Field(
        None,
        description="a customers column naming the person as the business knows them (e.g. a "
        "marketplace's customer_unique_id): records sharing a value are one person, keyed by it",
    )
    golden: GoldenConfig = Field(default_factory=GoldenConfig)
    splink: SplinkConfig = Field(default_factory=SplinkConfig)
    _where: Location | None = PrivateAttr(None)  # where person_key is set, for errors

    @model_validator(mode="after")
    def _key_needs_resolution(self) -> IdentityConfig:
        if self.person_key is not None and not self.enabled:
            raise ValueError("person_key keys people by identity resolution: set enabled: true")
        return self

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        import phonenumbers

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {value!r} (expected e.g. 'DE', 'US', 'GB')")
        return value.upper()


# --- built-in traits: lifecycle, RFM, value tiers, models -----------------------------------


class LifecycleConfig(Strict):
    """Thresholds of ``lifecycle.stage``; each defaults to a multiple of the purchase cycle."""

    cycle_days: float | None = Field(
        None,
        gt=0,
        description="purchase cycle in days (default: median over repeat buyers of "
        "their median days between orders)",
    )
    default_cycle_days: float = Field(
        30.0, gt=0, description="cycle used when the data has no repeat buyers yet"
    )
    new_factor: float = Field(1.0, gt=0, description="new: one order, placed within this x cycle")
    at_risk_factor: float = Field(
        2.0, gt=0, description="at_risk: last order older than this x cycle"
    )
    churned_factor: float = Field(
        4.0, gt=0, description="churned: last order older than this x cycle"
    )
    new_days: float | None = Field(None, gt=0, description="overrides new_factor x cycle")
    at_risk_days: float | None = Field(None, gt=0, description="overrides at_risk_factor x cycle")
    churned_days: float | None = Field(None, gt=0, description="overrides churned_factor x cycle")
    loyal_orders: int = Field(4, ge=2, description="loyal: at least this many orders, still active")

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleConfig:
        if self.at_risk_days is None and self.churned_days is None:
            if self.churned_factor <= self.at_risk_factor:
                raise ValueError("churned_factor must be larger than at_risk_factor")
        elif (
            self.at_risk_days is not None
            and self.churned_days is not None
            and self.churned_days <= self.at_risk_days
        ):
            raise ValueError("churned_days must be larger than at_risk_days")
        return self


class RfmCell(Strict):
    """One named region of the RFM grid: recency score x frequency-monetary score ranges."""

    name: str = Field(description="segment name, e.g. Champions")
    recency: tuple[int, int] = Field(description="inclusive range of the recency score")
    frequency_monetary: tuple[int, int] = Field(
        description="inclusive range of the frequency-monetary score"
    )


def _cell(name: str, r: tuple[int, int], fm: tuple[int, int]) -> RfmCell:
    return RfmCell(name=name, recency=r, frequency_monetary=fm)


# The standard 11-segment grid over recency (R) and frequency-monetary (FM) scores 1-5: every
# one of the 25 cells has exactly one name.
STANDARD_RFM_GRID: tuple[RfmCell, ...] = (
    _cell("Champions", (5, 5), (4, 5)),
    _cell("Loyal Customers", (3, 4), (4, 5)),
    _cell("Potential Loyalist", (4, 5), (2, 3)),
    _cell("New Customers", (5, 5), (1, 1)),
    _cell("Promising", (4, 4), (1, 1)),
    _cell("Need Attention", (3, 3), (3, 3)),
    _cell("About To Sleep", (3, 3), (1, 2)),
    _cell("Can't Lose Them", (1, 2), (5, 5)),
    _cell("At Risk", (1, 2), (3, 4)),
    _cell("Lost", (1, 1), (1, 1)),
    _cell("Hibernating", (1, 2), (1, 2)),
)


class RfmConfig(Strict):
    grid: tuple[RfmCell, ...] = Field(
        STANDARD_RFM_GRID,
        description="named cells of the R x FM grid, first match wins (default: the standard "
        "11-segment grid)",
    )
    monetary: Literal["ltv", "revenue_total", "margin_total"] = Field(
        "ltv", description="the trait scored as monetary value"
    )

    @field_validator("grid")
    @classmethod
    def _ranges(cls, value: tuple[RfmCell, ...]) -> tuple[RfmCell, ...]:
        for cell in value:
            for lo, hi in (cell.recency, cell.frequency_monetary):
                if not 1 <= lo <= hi <= 5:
                    raise ValueError(
                        f"{cell.name}: score ranges must satisfy 1 <= low <= high <= 5"
                    )
        return value


class ValueTier(Strict):
    name: str = Field(description="tier name, e.g. 'top 1%'")
    top: float = Field(gt=0, le=1, description="share of customers from the top, e.g. 0.01")


class ValueTiersConfig(Strict):
    tiers: tuple[ValueTier, ...] = Field(
        (
            ValueTier(name="top 1%", top=0.01),
            ValueTier(name="top 5%", top=0.05),
            ValueTier(name="top 20%", top=0.2),
        ),
        description="tiers from the smallest share up; a customer gets the first that fits",
    )
    rest: str = Field("rest", description="name of everyone else")

    @field_validator("tiers")
    @classmethod
    def _increasing(cls, value: tuple[ValueTier, ...]) -> tuple[ValueTier, ...]:
        tops = [t.top for t in value]
        if tops != sorted(tops) or len(set(tops)) != len(tops):
            raise ValueError("tiers must go from the smallest share to the largest")
        return value


# the rule language's keywords: not usable as a name part (propensity.<category>)
_RULE_WORDS = frozenset(
    ("or", "and", "not", "between", "in", "like", "is", "null", "true", "false", "now", "where",
     "within", "then", "case", "when", "else", "end")
)  # fmt: skip


class ModelsConfig(Strict):
    """Model traits (``clv.*``, ``churn.*``, ``cluster.*``, ``propensity.*``, ``nba.*``);
    fitted only when a rule uses them."""

    clv_model: Literal["bgnbd", "paretonbd"] = Field(
        "bgnbd", description="purchase model behind clv.* (BG/NBD or Pareto/NBD)"
    )
    clv_months: int = Field(12, ge=1, le=120, description="horizon of clv.value_12m in months")
    discount_rate_monthly: float = Field(
        0.01, ge=0, lt=1, description="monthly discount rate of CLV"
    )
    churn_horizon_days: int = Field(
        90, ge=7, description="churn = no purchase in this many days after the features"
    )
    churn_holdout: float = Field(
        0.25, gt=0, lt=1, description="share of customers held out to report the AUC"
    )
    clusters_k: tuple[int, int] = Field(
        (2, 8), description="smallest and largest k tried; the best silhouette wins"
    )

    @field_validator("clusters_k")
    @classmethod
    def _k_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 2 <= value[0] <= value[1]:
            raise ValueError(f"expected [smallest, largest] with 2 <= smallest <= largest, got "
                             f"{list(value)}")  # fmt: skip
        return value

    propensity_categories: list[str] = Field(
        default_factory=list,
        description="order categories (orders.category values) that get propensity.<category> "
        "and compete for nba.category; empty: only propensity.any",
    )
    propensity_horizon_days: int = Field(
        30, ge=1, description="propensity = an order within this many days after the instant"
    )

    @field_validator("propensity_categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for name in value:
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is None:
                raise ValueError(
                    f"{name!r} cannot name a trait (propensity.{name}): a category here has "
                    "letters, digits and _ only, spelled as in orders.category"
                )
            if name.lower() in _RULE_WORDS or name in ("any", "top_features"):
                raise ValueError(f"{name!r} is a reserved word; propensity.{name} cannot be used")
            if name in seen:
                raise ValueError(f"{name!r} is listed twice")
            seen.add(name)
        return value

    sample_size: int = Field(
        20_000,
        ge=100,
        description="customers sampled for churn and propensity training and silhouettes",
    )
    seed: int = Field(42, description="seed for sampling and model initialisation")
    refit: str = Field(
        "7d",
        description="refit a model when its latest fit is this old (e.g. 12h, 7d, 2w; 0: "
        "every run); runs in between score with the recorded fit",
    )

    @field_validator("refit")
    @classmethod
    def _duration(cls, value: str) -> str:
        refit_interval(value)
        return value.strip()

    @property
    def refit_every(self) -> timedelta:
        """``refit`` as a duration (zero: every run)."""
        return refit_interval(self.refit)


def refit_interval(text: str) -> timedelta:
    """``7d``, ``12h``, ``2w``, ``1mo``, ``1y`` or ``0`` (refit every run)."""
    import re

    m = re.fullmatch(r"\s*(0|(\d+)\s*(h|d|w|mo|y))\s*", text)
    if m is None:
        raise ValueError(f"expected a duration like 7d, 12h, 2w or 0, got {text!r}")
    if m.group(2) is None:
        return timedelta(0)
    hours = {"h": 1, "d": 24, "w": 168, "mo": 720, "y": 8760}[m.group(3)]
    return timedelta(hours=int(m.group(2)) * hours)


_WINDOW = re.compile(r"\s*(\d+)\s*(d|w|mo|y)\s*")


def parse_window(text: str) -> tuple[int, str]:
    """A retention window: ``90d``, ``12w``, ``18mo`` or ``2y`` -> (count, unit)."""
    m = _WINDOW.fullmatch(text)
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"expected a duration like 90d, 12w, 18mo or 2y, got {text!r}")
    return int(m.group(1)), m.group(2)


def add_months(at: datetime, months: int) -> datetime:
    """``at`` moved by whole calendar months (negative: back); the day is clipped to the
    month's length (01-31 + 1 month = 02-28 or 02-29)."""
    import calendar

    year, month = divmod(at.year * 12 + at.month - 1 + months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return at.replace(year=year, month=month + 1, day=min(at.day, last))


def local_time(at: datetime, timezone: str) -> datetime:
    """An instant (naive UTC) as naive wall time in ``timezone``."""
    from datetime import UTC

    if timezone == "UTC":
        return at
    return at.replace(tzinfo=UTC).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def when(at: datetime, timezone: str, seconds: bool = True) -> str:
    """An instant (naive UTC) as the project's wall time with its zone, and UTC beside it:
    ``2011-09-11 00:00:00 Europe/London (2011-09-10 23:00 UTC)``."""
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    if timezone == "UTC":
        return f"{at:{shape}} UTC"
    return f"{local_time(at, timezone):{shape}} {timezone} ({at:%Y-%m-%d %H:%M} UTC)"


def every_step(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """``start``, ``start + step``, ... up to ``end`` inclusive."""
    out: list[datetime] = []
    at = start
    while at <= end:
        out.append(at)
        at += step
    return out


@dataclass(frozen=True)
class Every:
    """A backfill step: hours, days and weeks are fixed lengths; months and years are calendar
    ones in the project's timezone (2011-01-31 every 1mo: 02-28, 03-31, 04-30)."""

    count: int
    unit: Literal["h", "d", "w", "mo", "y"]

    @classmethod
    def parse(cls, text: str) -> Every:
        m = re.fullmatch(r"\s*(\d+)\s*(h|d|w|mo|y)\s*", text)
        if m is None or int(m.group(1)) == 0:
            raise ValueError(f"expected a duration like 1d, 1w or 1mo, got {text!r}")
        return cls(int(m.group(1)), m.group(2))  # type: ignore[arg-type]

    def instants(self, start: datetime, end: datetime, timezone: str) -> list[datetime]:
        """Every step from ``start`` to ``end`` inclusive (naive UTC). The n-th instant is
        ``start`` plus n steps, so clipped days do not drift (01-31, 02-28, 03-31)."""
        from datetime import UTC

        if self.unit in ("h", "d", "w"):
            hours = {"h": 1, "d": 24, "w": 168}[self.unit] * self.count
            return every_step(start, end, timedelta(hours=hours))
        zone = ZoneInfo(timezone)
        local = start.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
        months = self.count * (12 if self.unit == "y" else 1)
        out: list[datetime] = []
        n = 0
        while True:
            wall = add_months(local, n * months)
            at = wall.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
            if at > end:
                return out
            out.append(at)
            n += 1


def _retainable(table: str) -> str:
    if table not in RETAINABLE:
        raise ValueError(f"retention applies to {', '.join(RETAINABLE)}; got table {table!r}")
    return table


def _window(text: str) -> str:
    parse_window(text)
    return text


Window = Annotated[str, AfterValidator(_window)]


class Purpose(Strict):
    description: str = ""
    basis: Literal["consent", "legitimate_interest"] = Field(
        "consent",
        description="consent: only people whose latest row for the purpose is opted_in pass; "
        "legitimate_interest: everyone passes unless their latest row is opted_out (an objection)",
    )


class PrivacyConfig(Strict):
    suppress_forgotten: bool = Field(
        True,
        description="drop people `crmseg forget` erased when their source rows are loaded again",
    )
    purposes: dict[str, Purpose] = Field(
        default_factory=dict,
        description="purposes campaigns may declare, besides the standard ones, or a standard "
        "one's legal basis",
    )
    retention: dict[Annotated[str, AfterValidator(_retainable)], Window] = Field(
        default_factory=dict,
        description="table -> window (90d, 12w, 18mo, 2y): older rows are invisible and purged",
    )

    @field_validator("purposes")
    @classmethod
    def _purpose_names(cls, value: dict[str, Purpose]) -> dict[str, Purpose]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"purpose names are lower_snake_case, got {name!r}")
        return value

    def bases(self) -> dict[str, str]:
        """Every known purpose -> its legal basis (consent unless configured)."""
        out = dict.fromkeys(PURPOSES, "consent")
        out.update({n: p.basis for n, p in self.purposes.items()})
        return out


class Config(Strict):
    name: str = Field(description="project name")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    timezone: str = Field("UTC", description="timezone of naive timestamps in the sources")
    currency: str = Field("EUR", description="reporting currency (ISO 4217)")
    sources: dict[str, SourceConfig] = Field(description="canonical table name -> source")
    inputs: dict[str, InputConfig] = Field(
        default_factory=dict, description="raw input name -> file or table, for sql: sources"
    )
    layers: tuple[str, ...] = Field(
        DEFAULT_LAYERS, min_length=1, description="allowed segment name prefixes"
    )

    @field_validator("layers")
    @classmethod
    def _layer_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for layer in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", layer):
                raise ValueError(f"layer names are lower_snake_case, got {layer!r}")
        return value

    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    value_tiers: ValueTiersConfig = Field(default_factory=ValueTiersConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r} (expected an IANA name such as UTC)"
            ) from None
        return value

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputConfig]) -> dict[str, InputConfig]:
        for name in value:
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"input names are lower_snake_case, got {name!r}")
            if name in TABLES:
                raise ValueError(
                    f"input {name!r} has a canonical table's name: call it e.g. raw_{name}"
                )
        return value

    @field_validator("sources")
    @classmethod
    def _known_tables(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        unknown = sorted(set(value) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown table {unknown[0]!r} (expected one of: {', '.join(TABLES)})")
        if "customers" not in value:
            raise ValueError("the 'customers' source is required")
        for table, source in value.items():
            if source.derive is not None:
                if table != "customers":
                    raise ValueError(f"{table}.derive: only customers can be derived")
                if source.derive not in value or source.derive == "customers":
                    raise ValueError(
                        f"customers.derive: {source.derive!r} is not another configured "
                        f"source (configured: {', '.join(n for n in value if n != 'customers')})"
                    )
            canonical = TABLES[table]
            for ours, theirs in source.columns.items():
                col = canonical.column(ours)
                if col is None:
                    raise At(
                        f"{ours!r} is not a column of the canonical {table} table (expected "
                        f"one of: {', '.join(c.name for c in canonical.columns)})",
                        (table, "columns", ours),
                        key=True,
                    )
                if isinstance(theirs, Constant) and not _fits(theirs.value, col.dtype):
                    raise At(
                        f"the constant {theirs.value!r} is not a {col.dtype}",
                        (table, "columns", ours, "value"),
                    )
        return value


class At(ValueError):
    """A validator's problem with one part of the value it checks: ``path`` leads from the
    validated field to that part (a column mapping under ``sources``), so the error points
    at the mapping, or at its key with ``key``."""

    def __init__(self, message: str, path: Sequence[str | int], key: bool = False) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.key = key


def _fits(value: object, dtype: str) -> bool:
    """Whether a constant can be a value of a canonical column of type ``dtype``."""
    if dtype in ("string", "json"):
        return isinstance(value, str | int | float) and not isinstance(value, bool)
    if dtype == "bool":
        return isinstance(value, bool)
    if dtype == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if dtype == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return False  # timestamps and dates come from the data


# --- YAML with positions -------------------------------------------------------------------


@dataclass
class YamlDoc:
    """A parsed YAML file that still knows where every value came from."""

    file: str
    data: Any
    root: yaml.Node | None

    def node(self, path: Sequence[str | int], key: bool = False) -> yaml.Node | None:
        """The node at a pydantic-style path (its key node with ``key``), or an ancestor."""
        node = self.root
        for i, part in enumerate(path):
            if isinstance(node, yaml.MappingNode):
                last = key and i == len(path) - 1
                child = next((k if last else v for k, v in node.value if k.value == part), None)
                if child is None:
                    return node
                node = child
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return node
                node = node.value[part]
            else:
                return node
        return node

    def location(self, path: Sequence[str | int] = (), key: bool = False) -> Location:
        node = self.node(path, key)
        field = ".".join(str(p) for p in path) or None
        if node is None:
            return Location(self.file, field=field)
        mark = node.start_mark
        return Location(self.file, mark.line + 1, mark.column + 1, field)

    def text_start(self, path: Sequence[str | int]) -> tuple[int, int]:
        """(line, column) where a scalar's text begins, for block scalars too."""
        node = self.node(path)
        if not isinstance(node, yaml.ScalarNode):
            return (1, 1)
        mark = node.start_mark
        if node.style in ("|", ">"):
            # The text starts on the next line, at the block's indentation.
            lines = (mark.buffer or "").splitlines() if mark.buffer else []
            line = mark.line + 1  # 0-based index of the first content line
            indent = 0
            if line < len(lines):
                text = lines[line]
                indent = len(text) - len(text.lstrip(" "))
            return (line + 1, indent + 1)
        if node.style in ("'", '"'):
            return (mark.line + 1, mark.column + 2)
        return (mark.line + 1, mark.column + 1)

    def source_text(self, path: Sequence[str | int], value: str) -> tuple[str, int, int]:
        """A scalar's text as written in the file, with the (line, column) it starts at.

        Block scalars (``|`` and ``>``) keep their continuation lines as they appear in the
        file (indentation included), so a position inside the text maps to the same
        line and column of the file; the rule language treats newlines as spaces.
        """
        line, column = self.text_start(path)
        node = self.node(path)
        if not isinstance(node, yaml.ScalarNode) or node.style not in ("|", ">"):
            return value, line, column
        lines = (node.start_mark.buffer or "").splitlines()
        end = node.end_mark.line  # 0-based; the block ends before this line (or on it)
        raw = lines[line - 1 : max(end, line)]
        while raw and not raw[-1].strip():
            raw.pop()
        if not raw:
            return value, line, column
        text = "\n".join([raw[0][column - 1 :], *(r.rstrip() for r in raw[1:])])
        return text, line, column


def load_yaml(path: Path, display: str | None = None) -> YamlDoc:
    """Read a YAML file; a syntax error becomes a located ConfigError."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", Location(name)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", Location(name)) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlDoc:
    """YAML text (named ``name`` in errors); a syntax error becomes a located ConfigError."""
    deep = _too_deep(text)
    if deep is not None:
        raise ConfigError(
            f"invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep",
            Location(name, deep[0], deep[1]),
        )
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_keys(root, name)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        raise ConfigError(f"invalid YAML: {exc.problem}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", Location(name)) from None
    except RecursionError:  # nesting by indentation alone, past what the parser can follow
        raise ConfigError(
            f"invalid YAML: nested more than {MAX_YAML_DEPTH} levels deep", Location(name)
        ) from None
    return YamlDoc(name, data, root)


MAX_YAML_DEPTH = 64  # far beyond any project file; the YAML parser recurses per level


def _too_deep(text: str) -> tuple[int, int] | None:
    """(line, column) where nesting first goes deeper than the limit: block indentation levels
    plus open flow collections (``[``/``{`` where YAML starts one: at a value's start, after
    ``- ``, ``,`` or another bracket). Quoted text, comments and block scalar bodies (``|``,
    ``>``) are skipped. The parser recurses per level and would overflow the stack first."""
    depth, quote = 0, ""
    indents: list[int] = []
    block: int | None = None  # indentation of the key that opened a block scalar
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw.lstrip(" ")
        indent = len(raw) - len(body)
        if block is not None:
            if not body or indent > block:
                continue
            block = None
        if not quote and depth == 0 and body and not body.startswith("#"):
            while indents and indents[-1] >= indent:
                indents.pop()
            indents.append(indent)
            if len(indents) > MAX_YAML_DEPTH:
                return number, indent + 1
        previous = " "
        last = ""  # the last character outside quotes and comments
        for col, ch in enumerate(raw, start=1):
            if quote:
                if ch == quote:
                    quote = ""
            elif ch == "#" and previous in " \t":
                break
            elif ch in "'\"" and previous in " \t[{,:-":
                quote = ch
            elif ch in "[{" and (depth > 0 or (previous in " \t-:" and last in ("", ":", "-"))):
                depth += 1
                if depth + len(indents) > MAX_YAML_DEPTH:
                    return number, col
            elif ch in "]}" and depth > 0:
                depth -= 1
            if not quote and ch not in " \t":
                last = ch
            previous = ch
        stripped = raw.split(" #", 1)[0].rstrip()
        if not quote and depth == 0 and re.search(r"(^|[:\-]\s)[|>][-+0-9]*$", stripped):
            block = indent
    return None


def _check_keys(root: yaml.Node, name: str) -> None:
    """A key written twice in one mapping is an error at the second (YAML keeps the last)."""
    stack = [root]
    visited: set[int] = set()  # aliases share nodes, and may even contain themselves
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if (key.tag, key.value) in seen:
                        mark = key.start_mark
                        raise ConfigError(
                            f"duplicate key {key.value!r} (the first one would be ignored)",
                            Location(name, mark.line + 1, mark.column + 1),
                        )
                    seen.add((key.tag, key.value))
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


M = TypeVar("M", bound=BaseModel)


def _describe(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (not allowed here)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def validate(model: type[M], doc: YamlDoc, data: Any = None, prefix: Sequence[str | int] = ()) -> M:
    """Validate ``data`` (default: the whole document) against ``model``.

    Raises a ConfigError at the first problem's file:line:column with its field path.
    """
    payload = doc.data if data is None else data
    if payload is None:
        payload = {}
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        # a mapping key that failed: pydantic appends "[key]"; point at the key itself
        key_failed = bool(loc) and loc[-1] == "[key]"
        if key_failed:
            loc.pop()
        path = [*prefix, *[p for p in loc if isinstance(p, str | int)]]
        at_key = err["type"] == "extra_forbidden" or key_failed
        part = err.get("ctx", {}).get("error")
        if isinstance(part, At):
            path, at_key = [*path, *part.path], part.key
        raise ConfigError(_describe(err), doc.location(path, key=at_key)) from None


def project_files(root: Path, folder: str) -> Iterator[YamlDoc]:
    """Every ``root/folder/*.yml`` in name order, named relative to the project."""
    for path in sorted((root / folder).glob("*.y*ml")):
        try:
            display = str(path.relative_to(root))
        except ValueError:
            display = str(path)
        yield load_yaml(path, display)


def named_items(
    root: Path, folder: str, model: type[BaseModel], key: str, kind: str
) -> Iterator[tuple[YamlDoc, int, Any]]:
    """(document, index, item) for every item under ``key`` of the folder's files, validated by
    ``model``; an item ``name`` used twice is an error located at the second one."""
    seen: dict[str, str] = {}
    for doc in project_files(root, folder):
        for i, item in enumerate(getattr(validate(model, doc), key)):
            where = doc.location([key, i, "name"])
            if item.name in seen:
                raise ConfigError(
                    f"duplicate {kind} name {item.name!r} (first defined at {seen[item.name]})",
                    where,
                )
            seen[item.name] = f"{where.file}:{where.line}"
            yield doc, i, item


def load_config(root: Path) -> Config:
    """Read and validate ``root/crmseg.yml``."""
    path = root / PROJECT_FILE
    if not path.exists():
        raise ConfigError(
            f"no {PROJECT_FILE} here: run 'crmseg init' or pass --project DIR",
            Location(str(path)),
        )
    doc = load_yaml(path, str(path))
    if not isinstance(doc.data, dict):
        raise ConfigError("expected a mapping with name, backend and sources", doc.location())
    config = validate(Config, doc)
    for name, source in config.sources.items():
        key = next(k for k in ("path", "table", "derive", "sql") if getattr(source, k) is not None)
        where = doc.location(["sources", name, key])
        source._where = f"{PROJECT_FILE}:{where.line}" if where.line else None
        for ours in source.columns:
            at = doc.location(["sources", name, "columns", ours])
            if at.line:
                source._columns_at[ours] = f"{PROJECT_FILE}:{at.line}:{at.column}"
    for name, given in config.inputs.items():
        where = doc.location(["inputs", name])
        given._where = f"{PROJECT_FILE}:{where.line}" if where.line else None
    if config.identity.person_key is not None:
        where = doc.location(["identity", "person_key"])
        config.identity._where = Location(PROJECT_FILE, where.line, where.column, where.field)
    return config
