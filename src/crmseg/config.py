"""Project configuration (``crmseg.yml``) and the YAML loading every project file shares.

All YAML files are validated by pydantic models with ``extra="forbid"``; a problem is reported
as a :class:`~crmseg.errors.ConfigError` naming the file, line, column and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crmseg.errors import ConfigError, Location
from crmseg.sources.model import TABLES

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


class BackendConfig(Strict):
    kind: Literal["duckdb"] = "duckdb"
    path: str = Field(".crmseg/warehouse.duckdb", description="warehouse file, project-relative")
    threads: int | None = Field(None, ge=1, description="DuckDB threads (default: all cores)")
    memory_limit: str | None = Field(None, description="DuckDB memory limit, e.g. '8GB'")


class StateConfig(Strict):
    path: str = Field(".crmseg/state.duckdb", description="state database, project-relative")


class SourceConfig(Strict):
    """One canonical table: a file (CSV/Parquet, globs allowed) or a table in the backend."""

    path: str | None = Field(None, description="CSV or Parquet file or glob, project-relative")
    table: str | None = Field(None, description="a table in the backend database, e.g. raw.events")
    format: Literal["csv", "parquet"] | None = Field(
        None, description="file format (default: from the file extension)"
    )
    delimiter: str | None = Field(None, description="CSV delimiter (default: detected)")
    columns: dict[str, str] = Field(
        default_factory=dict, description="column mapping, ours: theirs"
    )
    timezone: str | None = Field(
        None, description="timezone of naive timestamps in this source (default: project's)"
    )

    @model_validator(mode="after")
    def _one_location(self) -> SourceConfig:
        if (self.path is None) == (self.table is None):
            raise ValueError("give exactly one of 'path' (a file) or 'table' (a backend table)")
        return self

    @property
    def file_format(self) -> Literal["csv", "parquet"]:
        if self.format:
            return self.format
        assert self.path is not None
        lower = self.path.lower()
        if lower.endswith((".parquet", ".pq")):
            return "parquet"
        return "csv"


class Config(Strict):
    name: str = Field(description="project name")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    timezone: str = Field("UTC", description="timezone of naive timestamps in the sources")
    currency: str = Field("EUR", description="reporting currency (ISO 4217)")
    sources: dict[str, SourceConfig] = Field(description="canonical table name -> source")
    layers: tuple[str, ...] = Field(DEFAULT_LAYERS, description="allowed segment name prefixes")

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

    @field_validator("sources")
    @classmethod
    def _known_tables(cls, value: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        unknown = sorted(set(value) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown table {unknown[0]!r} (expected one of: {', '.join(TABLES)})")
        if "customers" not in value:
            raise ValueError("the 'customers' source is required")
        for table, source in value.items():
            canonical = TABLES[table]
            for ours in source.columns:
                if canonical.column(ours) is None:
                    raise ValueError(
                        f"{table}.columns: {ours!r} is not a column of the canonical {table} "
                        f"table (expected one of: {', '.join(c.name for c in canonical.columns)})"
                    )
        return value


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
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = Location(name, mark.line + 1, mark.column + 1) if mark else Location(name)
        raise ConfigError(f"invalid YAML: {exc.problem}", where) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", Location(name)) from None
    return YamlDoc(name, data, root)


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
        path = [*prefix, *[p for p in err["loc"] if isinstance(p, str | int)]]
        at_key = err["type"] == "extra_forbidden"
        raise ConfigError(_describe(err), doc.location(path, key=at_key)) from None


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
    return validate(Config, doc)
