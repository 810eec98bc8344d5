"""Change control: a segment definition is proposed, shown with its membership impact, and only
written to the project's YAML once someone else approves it. Every decision is in an audit log.

A proposal is the text of a segments file holding one segment (``segments: [{name: ...}]``),
exactly what a user would write under ``segments/``. It is checked like the project's own
files (located errors name ``proposal:LINE:COLUMN``) and compiled with the rest of the
catalog before it is stored. Approving rewrites only that segment's item in its file (a new
segment goes to ``segments/approved.yml``), and refuses when the segment's definition moved on
since the proposal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from crmseg.config import YamlDoc, parse_yaml, validate
from crmseg.errors import ConfigError, ConflictError, NotFoundError

if TYPE_CHECKING:
    from crmseg.backends.state import StateStore
    from crmseg.segments.catalog import Segment

PROPOSAL = "proposal"  # the file name errors in a proposal are located in
NEW_FILE = "segments/approved.yml"  # where approved new segments are written

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS changes (
        change_id INTEGER PRIMARY KEY,
        segment VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        text VARCHAR NOT NULL,
        before_hash VARCHAR,
        after_hash VARCHAR NOT NULL,
        impact VARCHAR NOT NULL,
        proposed_by VARCHAR NOT NULL,
        proposed_at TIMESTAMP NOT NULL,
        decided_by VARCHAR,
        decided_at TIMESTAMP,
        file VARCHAR
    )""",
        """CREATE TABLE IF NOT EXISTS audit_log (
        logged_at TIMESTAMP NOT NULL,
        actor VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        object VARCHAR NOT NULL,
        before_hash VARCHAR,
        after_hash VARCHAR
    )""",
    ],
    # 2: entries of one instant in the order written (not every engine has insertion-ordered
    # row ids); older entries come after, by time alone
    ["ALTER TABLE audit_log ADD COLUMN seq BIGINT"],
]


@dataclass
class Change:
    change_id: int
    segment: str
    kind: str  # new | changed
    status: str  # pending | approved | rejected
    text: str
    before_hash: str | None
    after_hash: str
    impact: dict[str, Any]
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    file: str | None = None  # where an approved change was written


class NoSuchChangeError(NotFoundError):
    """No change has the id asked for."""


class ChangeStore:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        state.migrate("changes", MIGRATIONS)

    def add(self, change: Change) -> int:
        with self.state.transaction():
            self.state.exclusive()  # the next id is this writer's
            rows = self.state.rows("SELECT coalesce(max(change_id), 0) + 1 FROM changes")
            change.change_id = int(rows[0][0])
            self.state.execute(
                "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                [change.change_id, change.segment, change.kind, change.status, change.text,
                 change.before_hash, change.after_hash, json.dumps(change.impact, default=str),
                 change.proposed_by, change.proposed_at],
            )  # fmt: skip
            self.log(change.proposed_by, "propose", f"segment {change.segment}",
                     change.before_hash, change.after_hash, change.proposed_at)  # fmt: skip
        return change.change_id

    def get(self, change_id: int) -> Change:
        found = self.select(change_id=change_id)
        if not found:
            raise NoSuchChangeError(f"no change {change_id}")
        return found[0]

    def select(self, status: str | None = None, change_id: int | None = None) -> list[Change]:
        rows = self.state.dicts(
            "SELECT * FROM changes WHERE (CAST(? AS VARCHAR) IS NULL OR status = ?) "
            "AND (CAST(? AS INTEGER) IS NULL OR change_id = ?) ORDER BY change_id",
            [status, status, change_id, change_id],
        )
        return [Change(**{**r, "impact": json.loads(r["impact"])}) for r in rows]

    def decide(self, change: Change, status: str, by: str, at: datetime, file: str | None) -> None:
        """Record the decision (call inside a transaction with the file's write)."""
        self.state.execute(
            "UPDATE changes SET status = ?, decided_by = ?, decided_at = ?, file = ? "
            "WHERE change_id = ?",
            [status, by, at, file, change.change_id],
        )
        verb = "approve" if status == "approved" else "reject"
        self.log(by, verb, f"segment {change.segment} (change {change.change_id})",
                 change.before_hash, change.after_hash, at)  # fmt: skip

    def log(
        self,
        actor: str,
        action: str,
        obj: str,
        before: str | None,
        after: str | None,
        at: datetime,
    ) -> None:
        with self.state.transaction():  # in turn with other writers: one seq each
            self.state.execute(
                "INSERT INTO audit_log SELECT ?, ?, ?, ?, ?, ?, coalesce(max(seq), 0) + 1 "
                "FROM audit_log",
                [at, actor, action, obj, before, after],
            )

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        return self.state.dicts(
            "SELECT logged_at, actor, action, object, before_hash, after_hash FROM audit_log "
            "ORDER BY logged_at DESC, seq DESC NULLS LAST LIMIT ?",
            [limit],
        )


def after_write() -> None:
    """Runs once an approved change is in its file and before the decision is recorded (kill
    tests stop here: approving again records it without writing twice)."""


def parse_proposal(text: str) -> tuple[YamlDoc, Segment]:
    """The one segment a proposal holds, checked like a project file (located errors)."""
    from crmseg.segments.catalog import SegmentFile, _segment

    doc = parse_yaml(text, PROPOSAL)
    if not isinstance(doc.data, dict) or "segments" not in doc.data:
        raise ConfigError(
            "expected a segments file holding one segment: segments: [{name: ..., rule: ...}]",
            doc.location(),
        )
    parsed = validate(SegmentFile, doc)
    if len(parsed.segments) != 1:
        raise ConfigError(
            f"a proposal holds exactly one segment, got {len(parsed.segments)}",
            doc.location(["segments"]),
        )
    return doc, _segment(doc, 0, parsed.segments[0])


def _item_text(doc: YamlDoc, text: str) -> str:
    """The proposal's one item as written (its mapping, without the leading ``- ``)."""
    node = doc.node(["segments", 0])
    assert node is not None
    return text[node.start_mark.index : _end(node)].rstrip()


def _indented(item: str, column: int) -> str:
    """``item`` with its continuation lines moved to ``column``, keeping relative indents."""
    lines = item.splitlines()
    rest = [ln for ln in lines[1:] if ln.strip()]
    least = min((len(ln) - len(ln.lstrip(" ")) for ln in rest), default=0)
    shifted = [(" " * column + ln[least:]) if ln.strip() else "" for ln in lines[1:]]
    return "\n".join([lines[0], *shifted])


def write_change(root: Path, current: Segment | None, doc: YamlDoc, text: str) -> str:
    """Write the proposal into the project: replace ``current``'s item in its file, or add a
    new segment to :data:`NEW_FILE`. Returns the file (project-relative). The write is a
    rename of a complete file, so a reader sees the old file or the new one."""
    item = _item_text(doc, text)
    if current is None:
        path = root / NEW_FILE
        body = path.read_text(encoding="utf-8") if path.exists() else "segments:\n"
        if body and not body.endswith("\n"):
            body += "\n"
        new = body + "  - " + _indented(item, 4) + "\n"
        rel = NEW_FILE
    else:
        rel = current.file
        path = root / rel
        body = path.read_text(encoding="utf-8")
        node = _node_of(body, current)
        start, end = node.start_mark.index, _end(node)
        old = body[start:end]
        tail = old[len(old.rstrip()) :]
        new = body[:start] + _indented(item, node.start_mark.column) + tail + body[end:]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
    return rel


def _end(node: yaml.Node) -> int:
    """Where an item's own text ends: after its last value, not at the next token (which, for
    the file's last item, comes after any comments that follow it)."""
    if isinstance(node, yaml.MappingNode) and node.value:
        return _end(node.value[-1][1])
    if isinstance(node, yaml.SequenceNode) and node.value:
        return _end(node.value[-1])
    return int(node.end_mark.index)


def _node_of(body: str, segment: Segment) -> yaml.Node:
    root = yaml.compose(body, Loader=yaml.SafeLoader)
    doc = YamlDoc(segment.file, yaml.safe_load(body), root)
    items = doc.data.get("segments", []) if isinstance(doc.data, dict) else []
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == segment.name:
            node = doc.node(["segments", i])
            if node is not None:
                return node
    raise ConflictError(f"segment {segment.name!r} is no longer in {segment.file}")
