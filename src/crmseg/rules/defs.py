"""What the rest of crmseg hands to the rule compiler: definitions and the data's schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from crmseg.sources.model import DType


@dataclass(frozen=True)
class Definition:
    """One user-written (or built-in) segment or trait."""

    name: str
    kind: Literal["segment", "trait"]
    text: str | None = None  # rule (segment) or expr (trait)
    sql: str | None = None  # segment only: raw SQL returning customer_id
    file: str | None = None
    line: int = 1  # line in `file` where `text` starts
    column: int = 1  # column where `text` starts on that line
    description: str = ""


@dataclass(frozen=True)
class Schema:
    """Present canonical tables -> column -> dtype (canonical and extra columns)."""

    tables: Mapping[str, Mapping[str, DType]]


@dataclass(frozen=True)
class ModelTrait:
    """A per-customer value fitted outside the plan (a model output) that rules may use.

    ``type`` is a checker type ("number", "string", ...); ``tables`` the canonical tables the
    model needs (a project without them cannot use it)."""

    name: str
    type: Literal["number", "string", "bool", "time"]
    tables: tuple[str, ...] = ("orders",)
    description: str = ""
