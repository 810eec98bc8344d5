"""Segment definition files (``segments/*.yml``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from crmseg.config import Strict, YamlDoc, named_items
from crmseg.rules import Definition


class Checks(Strict):
    min_size: int | None = Field(None, ge=0, description="fewest members allowed")
    max_size: int | None = Field(None, ge=0, description="most members allowed")
    max_share: float | None = Field(None, ge=0, le=1, description="largest share of customers")
    max_churn: float | None = Field(
        None, ge=0, le=1, description="largest share of members changed since the previous run"
    )
    max_daily_churn: float | None = Field(None, ge=0, le=1, description="alias of max_churn")
    min_stability: float | None = Field(
        None, ge=0, le=1, description="smallest Jaccard similarity with the previous run"
    )
    max_overlap_with: dict[str, float] = Field(
        default_factory=dict, description="segment -> largest shared share of members"
    )


class SegmentSpec(Strict):
    name: str = Field(description="layer.name in lower_snake_case")
    description: str = Field("", description="what the segment means, in plain language")

    @field_validator("name")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a segment needs a name (layer.name in lower_snake_case)")
        return value

    owner: str | None = Field(None, description="team or person responsible")
    purpose: str | None = Field(None, description="what the segment is used for")
    refresh: Literal["realtime", "hourly", "daily", "weekly"] = "daily"
    tags: list[str] = Field(default_factory=list)
    rule: str | None = Field(None, description="a rule in the crmseg rule language")
    sql: str | None = Field(None, description="raw SQL returning customer_id (escape hatch)")
    checks: Checks | None = None

    @model_validator(mode="after")
    def _rule_or_sql(self) -> SegmentSpec:
        if (self.rule is None) == (self.sql is None):
            raise ValueError("give exactly one of 'rule' or 'sql'")
        return self


class SegmentFile(Strict):
    segments: list[SegmentSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class Segment:
    spec: SegmentSpec
    definition: Definition
    file: str
    line: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hash(self) -> str:
        return definition_hash(self.definition)

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0] if "." in self.name else ""

    @property
    def recorded(self) -> str:
        """The definition as runs record it (JSON), so diff can rebuild it later."""
        body = {"rule": self.spec.rule} if self.spec.rule is not None else {"sql": self.spec.sql}
        return json.dumps(body, sort_keys=True)


def find_segment(segments: Sequence[Segment], name: str) -> Segment:
    """The segment named ``name``; an unknown name is an error with the closest match."""
    for seg in segments:
        if seg.name == name:
            return seg
    import difflib

    from crmseg.errors import UnknownSegmentError

    close = difflib.get_close_matches(name, [s.name for s in segments], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownSegmentError(f"no segment named {name!r}{hint}")


def definition_hash(definition: Definition) -> str:
    body = f"{definition.kind}\0{definition.name}\0{definition.text or ''}\0{definition.sql or ''}"
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def load_segments(root: Path) -> list[Segment]:
    """Every segment of ``root/segments/*.yml``, in file order; duplicate names are an error."""
    return [
        _segment(doc, i, spec)
        for doc, i, spec in named_items(root, "segments", SegmentFile, "segments", "segment")
    ]


def _segment(doc: YamlDoc, i: int, spec: SegmentSpec) -> Segment:
    key = "rule" if spec.rule is not None else "sql"
    text, line, column = doc.source_text(["segments", i, key], spec.rule or spec.sql or "")
    definition = Definition(
        name=spec.name,
        kind="segment",
        text=text if spec.rule is not None else None,
        sql=spec.sql,
        file=doc.file,
        line=line,
        column=column,
        description=spec.description,
    )
    return Segment(spec, definition, doc.file, doc.location(["segments", i]).line or 1)
