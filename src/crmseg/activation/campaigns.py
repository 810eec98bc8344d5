"""Campaign definition files (``campaigns/*.yml``): pydantic models and a located loader."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from crmseg.config import Strict, YamlDoc, named_items
from crmseg.errors import ConfigError, Location
from crmseg.rules.parser import UNIT_SECONDS
from crmseg.sources.model import PURPOSES
from crmseg.sources.pii import PII_FIELDS

Channel = Literal["email", "sms", "push", "in_app", "direct_mail", "ads"]
_DURATION = re.compile(r"\s*(\d+)\s*(mo|h|d|w|y)\s*")
_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
# Fields every export record can carry besides customer columns.
RECORD_FIELDS = ("customer_key", "campaign", "arm", "variant", "channel", "sent_at")


def parse_duration(text: str) -> timedelta:
    """``12h``, ``7d``, ``8w``, ``6mo`` (30 days), ``1y`` (365 days) as a timedelta."""
    m = _DURATION.fullmatch(text)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"expected a positive duration like 12h, 7d, 8w, 6mo or 1y, got {text!r}")
    return timedelta(seconds=int(m.group(1)) * UNIT_SECONDS[m.group(2)])


def _duration(value: str) -> str:
    parse_duration(value)
    return value.strip()


PLACEHOLDERS = ("campaign", "as_of")


def path_template(value: str) -> str:
    """An output path: project-relative, with only ``{campaign}`` and ``{as_of}`` (``{{`` and
    ``}}`` for literal braces). Anything else would be a Python format field."""
    import string

    if not value.strip():
        raise ValueError("expected a file path, got an empty one")
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL character")
    try:
        fields = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"{exc} in {value!r} (write {{{{ and }}}} for literal braces)") from None
    for _literal, name, spec, conversion in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (
                f":{spec}" if spec else "") + "}"  # fmt: skip
            raise ValueError(
                f"unknown placeholder {shown} in {value!r}: only {{campaign}} and {{as_of}}"
            )
    return value


def outside_project(value: str) -> bool:
    """Whether a path template, once expanded, may point outside the project folder."""
    import os.path

    expanded = value.format(campaign="c", as_of="t")
    if os.path.isabs(expanded) or expanded.startswith("~"):
        return True
    return os.path.normpath(expanded).split(os.sep)[0] == ".."


class _Output(Strict):
    """A destination writing files: paths stay inside the project unless allowed."""

    allow_outside_project: bool = Field(
        False, description="let paths be absolute or leave the project folder (`..`)"
    )
    purpose: str | None = Field(
        None,
        description="a purpose this destination also needs (privacy.purposes): it receives only "
        "treatment customers who pass it",
    )

    def _paths(self) -> list[tuple[str, str]]:
        return []

    @model_validator(mode="after")
    def _confined(self) -> _Output:
        for key, value in self._paths():
            if not self.allow_outside_project and outside_project(value):
                raise ValueError(
                    f"{key} {value!r} is outside the project folder: use a project-relative "
                    "path, or set allow_outside_project: true"
                )
        return self


class Suppress(Strict):
    """Who is kept out even though they are in the segment (evaluated at the activation instant)."""

    purchased_within: str | None = Field(None, description="ordered within this duration")
    messaged_within: str | None = Field(
        None, description="was sent any message (any channel, any campaign) within this duration"
    )
    unsubscribed: bool = Field(True, description="ever unsubscribed on the campaign's channel")
    complained: bool = Field(True, description="ever complained on the campaign's channel")
    bounced: bool = Field(False, description="ever bounced on the campaign's channel")
    rules: dict[str, str] = Field(
        default_factory=dict, description="name -> rule in the rule language; true = suppressed"
    )

    _check = field_validator("purchased_within", "messaged_within")(
        lambda v: None if v is None else _duration(v)
    )


class Cap(Strict):
    """At most ``max`` messages per customer within ``per``, counting this one."""

    max: int = Field(ge=1, description="most messages allowed in the window, this one included")
    per: str = Field(description="the window, e.g. 7d")
    scope: Literal["all", "channel"] = Field(
        "all", description="all: every channel and campaign; channel: the campaign's channel only"
    )

    _check = field_validator("per")(lambda v: _duration(v))


class SendWindow(Strict):
    """When ``crmseg activate --due`` activates the campaign."""

    start: datetime | None = Field(None, description="first instant the campaign is due")
    end: datetime | None = Field(None, description="instant from which it is no longer due")
    every: str = Field("1d", description="least time between two activations")

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self

    _check = field_validator("every")(lambda v: _duration(v))


class Split(Strict):
    name: str = Field(description="variant name")
    weight: float = Field(gt=0, allow_inf_nan=False, description="relative weight")


class FileDestination(_Output):
    type: Literal["file"]
    name: str | None = Field(None, description="unique per campaign (default: the type)")
    path: str = Field(description="output file, project-relative; {campaign} and {as_of} expand")
    format: Literal["csv", "parquet", "jsonl"] | None = Field(
        None, description="default: from the file extension"
    )
    fields: list[str] = Field(
        default_factory=lambda: ["customer_key", "variant"], description="columns, in order"
    )
    pii: list[str] = Field(default_factory=list, description="PII fields allowed in `fields`")
    sync: Literal["full", "incremental"] = Field(
        "full", description="full: the whole audience; incremental: adds and removes (op column)"
    )

    _path = field_validator("path")(lambda v: path_template(v))

    def _paths(self) -> list[tuple[str, str]]:
        return [("path", self.path)]

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        lower = self.path.lower()
        if lower.endswith((".parquet", ".pq")):
            return "parquet"
        if lower.endswith((".jsonl", ".ndjson", ".json")):
            return "jsonl"
        return "csv"


class AdListDestination(_Output):
    type: Literal["ad_list"]
    name: str | None = None
    platform: Literal["google", "meta", "tiktok"] = Field(description="the customer-list layout")
    path: str = Field(description="output CSV, project-relative; {campaign} and {as_of} expand")
    identifiers: list[Literal["email", "phone"]] = Field(
        ["email", "phone"], description="hashed identifiers to include"
    )
    default_region: str = Field(
        "DE", description="country (ISO alpha-2) for phone numbers without a country code"
    )
    sync: Literal["full", "incremental"] = Field(
        "full", description="incremental writes <stem>.add.csv and <stem>.remove.csv"
    )

    _path = field_validator("path")(lambda v: path_template(v))

    def _paths(self) -> list[tuple[str, str]]:
        return [("path", self.path)]


class WebhookDestination(_Output):
    type: Literal["webhook"]
    name: str | None = None
    url: str = Field(description="http(s) URL receiving POSTed JSON batches")
    fields: list[str] = Field(default_factory=lambda: ["customer_key", "variant"])
    pii: list[str] = Field(default_factory=list)
    batch_size: int = Field(500, ge=1, le=100_000)
    max_attempts: int = Field(5, ge=1, le=20, description="tries per batch before dead-lettering")
    backoff_seconds: float = Field(0.5, ge=0, description="first retry delay; doubles each time")
    timeout_seconds: float = Field(10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers")
    dead_letter: str = Field(
        ".crmseg/dead_letter/{campaign}.jsonl", description="where failing batches are appended"
    )
    sync: Literal["full", "incremental"] = Field("incremental")

    _path = field_validator("dead_letter")(lambda v: path_template(v))

    def _paths(self) -> list[tuple[str, str]]:
        return [("dead_letter", self.dead_letter)]

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


Destination = Annotated[
    FileDestination | AdListDestination | WebhookDestination, Field(discriminator="type")
]


class CampaignSpec(Strict):
    name: str = Field(description="lower_snake_case, unique in the project")
    description: str = ""
    owner: str | None = None
    segment: str = Field(description="a segment, or segments combined with and / or / not")
    exclude: list[str] = Field(default_factory=list, description="segments kept out")
    channel: Channel
    purpose: str | None = Field(
        None,
        description="what the campaign is for (privacy.purposes): only people with consent, or "
        "no objection under legitimate interest, for it pass",
    )
    suppress: Suppress = Field(default_factory=Suppress)
    frequency_cap: list[Cap] = Field(default_factory=list)
    priority: int = Field(0, description="higher wins within a group")
    group: str | None = Field(None, description="campaigns of one group are mutually exclusive")
    send_window: SendWindow = Field(default_factory=SendWindow)
    holdout: float = Field(0.0, ge=0, lt=1, description="share kept out and recorded")
    splits: list[Split] = Field(default_factory=list, description="named variants with weights")
    destination: list[Destination] = Field(default_factory=list)
    enabled: bool = True

    @field_validator("destination", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"campaign names are lower_snake_case, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        names = [d.name or d.type for d in self.destination]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destination name {dupes[0]!r} is used twice: give each a name")
        variants = [s.name for s in self.splits]
        if len(set(variants)) != len(variants):
            raise ValueError("split names must be unique")
        for d in self.destination:
            if isinstance(d, FileDestination | WebhookDestination):
                for f in d.fields:
                    if f in PII_FIELDS and f not in d.pii:
                        raise ValueError(
                            f"field {f!r} is personal data: list it under 'pii' to export it"
                        )
        return self


class CampaignFile(Strict):
    campaigns: list[CampaignSpec] = Field(default_factory=list)


@dataclass(frozen=True)
class Campaign:
    spec: CampaignSpec
    file: str
    line: int
    rule_locations: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def segments(self) -> list[str]:
        """Every segment the campaign reads (its expression and its exclusions)."""
        return [*segment_names(self.spec.segment), *self.spec.exclude]

    @property
    def hash(self) -> str:
        spec = _without_unset_purposes(self.spec.model_dump(mode="json"))
        body = json.dumps(spec, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def due(self, at: datetime, last: datetime | None) -> bool:
        """Whether ``activate --due`` should activate at ``at`` (last: previous activation)."""
        w = self.spec.send_window
        if not self.spec.enabled or (w.start and at < w.start) or (w.end and at >= w.end):
            return False
        return last is None or at - last >= parse_duration(w.every)


def _without_unset_purposes(spec: dict[str, Any]) -> dict[str, Any]:
    """A campaign without purposes hashes as it did before purposes existed (its activations
    stay the same definition)."""
    for item in [spec, *spec.get("destination", [])]:
        if item.get("purpose") is None:
            item.pop("purpose", None)
    return spec


# --- segment expressions: `a and (b or not c)` over segment names ---------------------------

_TOKEN = re.compile(r"\s*(\(|\)|[A-Za-z_][A-Za-z0-9_.]*)")


def parse_segment_expr(text: str) -> object:
    """Parse ``a and (b or not c)``; raises ValueError with what was expected."""
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"unexpected {text[pos:].strip()[:10]!r} in segment expression")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    i = 0

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> str:
        nonlocal i
        if i >= len(tokens):
            raise ValueError("segment expression ends early: expected a segment name")
        i += 1
        return tokens[i - 1]

    def disj() -> object:
        left = conj()
        while peek() == "or":
            take()
            left = ("or", left, conj())
        return left

    def conj() -> object:
        left = unary()
        while peek() == "and":
            take()
            left = ("and", left, unary())
        return left

    def unary() -> object:
        tok = take()
        if tok == "not":
            return ("not", unary())
        if tok == "(":
            inner = disj()
            if take() != ")":
                raise ValueError("expected ')' in segment expression")
            return inner
        if tok in ("and", "or", ")"):
            raise ValueError(f"expected a segment name, got {tok!r}")
        return tok

    tree = disj()
    if i != len(tokens):
        raise ValueError(f"unexpected {tokens[i]!r} in segment expression")
    return tree


def segment_names(text: str) -> list[str]:
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            if node not in out:
                out.append(node)
        elif isinstance(node, tuple):
            for child in node[1:]:
                walk(child)

    walk(parse_segment_expr(text))
    return out


def evaluate_segment_expr(text: str, members: dict[str, set[str]], universe: set[str]) -> set[str]:
    """The customers the expression selects; ``not x`` is relative to ``universe``."""

    def ev(node: object) -> set[str]:
        if isinstance(node, str):
            return members[node]
        assert isinstance(node, tuple)
        if node[0] == "not":
            return universe - ev(node[1])
        left, right = ev(node[1]), ev(node[2])
        return left & right if node[0] == "and" else left | right

    return ev(parse_segment_expr(text))


# --- loading -------------------------------------------------------------------------------


def load_campaigns(
    root: Path, segments: list[str] | None = None, purposes: Iterable[str] | None = None
) -> list[Campaign]:
    """Every campaign of ``root/campaigns/*.yml``; unknown segments and purposes are located
    errors (``purposes``: the project's known ones, by default the standard ones)."""
    out: list[Campaign] = []
    known = set(segments) if segments is not None else None
    allowed = set(purposes) if purposes is not None else set(PURPOSES)
    for doc, i, spec in named_items(root, "campaigns", CampaignFile, "campaigns", "campaign"):
        _check_segments(doc, i, spec, known)
        _check_purposes(doc, i, spec, allowed)
        rules = {
            name: doc.text_start(["campaigns", i, "suppress", "rules", name])
            for name in spec.suppress.rules
        }
        line = doc.location(["campaigns", i]).line or 1
        out.append(Campaign(spec, doc.file, line, rules))
    return out


def _check_segments(doc: YamlDoc, i: int, spec: CampaignSpec, known: set[str] | None) -> None:
    try:
        names = segment_names(spec.segment)
    except ValueError as exc:
        raise ConfigError(str(exc), doc.location(["campaigns", i, "segment"])) from None
    if known is None:
        return
    import difflib

    for key, listed in (("segment", names), ("exclude", spec.exclude)):
        for j, name in enumerate(listed):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                path: list[str | int] = ["campaigns", i, key]
                if key == "exclude":
                    path.append(j)
                raise ConfigError(f"no segment named {name!r}{hint}", doc.location(path))


def _check_purposes(doc: YamlDoc, i: int, spec: CampaignSpec, known: set[str]) -> None:
    import difflib

    named: list[tuple[list[str | int], str | None]] = [(["campaigns", i, "purpose"], spec.purpose)]
    named += [
        (["campaigns", i, "destination", j, "purpose"], d.purpose)
        for j, d in enumerate(spec.destination)
    ]
    for path, purpose in named:
        if purpose is not None and purpose not in known:
            close = difflib.get_close_matches(purpose, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown purpose {purpose!r}{hint}; expected one of {', '.join(sorted(known))}, "
                "or declare it under privacy.purposes in crmseg.yml",
                doc.location(path),
            )


def campaign_location(c: Campaign) -> Location:
    return Location(c.file, c.line, field=c.name)
