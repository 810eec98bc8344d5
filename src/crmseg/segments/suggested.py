"""``crmseg suggest --write``: suggested rules saved as segments awaiting review.

They go to ``segments/suggested.yml`` with an empty owner and purpose, so ``validate --strict``
flags each until a person has read it and filled them in. The file is appended to, never
rewritten: entries already there (perhaps reviewed and edited) stay as they are; a rule in any
segment file, or written before (a ``# suggested:`` line, which outlives a deleted entry: that
is how a rule is rejected), is not added again. Names carry a hash of the rule, never reused.
The new text is checked as a whole project (names unique
across every segment file, the YAML valid) before it replaces the file in one rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crmseg.config import parse_yaml, validate
from crmseg.errors import ConfigError, Location
from crmseg.segments.catalog import SegmentFile, load_segments
from crmseg.segments.governance import SUGGESTED as LAYER

FILE = "segments/suggested.yml"


@dataclass(frozen=True)
class Proposed:
    rule: str
    description: str


def write_suggested(root: Path, key: str, proposed: Sequence[Proposed]) -> list[str]:
    """Append ``proposed`` as ``suggested.<key>_<hash of the rule>`` segments; the names
    written. A rule already in any segment file, or suggested before (a ``# suggested:``
    line at the end of the file, kept when an entry is deleted to reject it), is skipped."""
    path = root / FILE
    existing = load_segments(root)  # the project as it stands must load (else: its error)
    names = {s.name for s in existing}
    saved = {" ".join((s.spec.rule or "").split()) for s in existing}
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    saved |= _history(old)
    item, key_pad = _indent(old)
    lines: list[str] = []
    history: list[str] = []
    written: list[str] = []
    for p in proposed:
        if " ".join(p.rule.split()) in saved:
            continue
        digest = hashlib.sha256(p.rule.encode()).hexdigest()
        name = f"{LAYER}.{key}_{digest[:6]}"
        if name in names:  # another rule with the same six digits: take more
            name = f"{LAYER}.{key}_{digest[:12]}"
        names.add(name)
        saved.add(" ".join(p.rule.split()))
        written.append(name)
        lines += [
            f"{item}- name: {name}",
            f"{key_pad}description: {json.dumps(p.description, ensure_ascii=False)}",
            f"{key_pad}owner:    # to fill in by the person who reviews and owns it",
            f"{key_pad}purpose:  # to fill in: what it is used for",
            f"{key_pad}tags: [suggested]",
            f"{key_pad}rule: {json.dumps(p.rule, ensure_ascii=False)}",
        ]
        history.append(f"{_SEEN} {json.dumps(p.rule, ensure_ascii=False)}")
    if not written:
        return []
    if old.strip():
        text = old if old.endswith("\n") else old + "\n"
        if "segments:" not in text or _flow(text):
            raise ConfigError(
                "expected 'segments:' followed by an indented list to append suggestions to",
                Location(FILE, 1),
            )
    else:
        text = (
            "# Rules found by `crmseg suggest`. Each waits for review: read it, then fill in\n"
            "# owner and purpose (validate --strict fails until then), or delete it.\n"
            "segments:\n"
        )
    text += "\n".join([*lines, *history]) + "\n"
    checked = validate(SegmentFile, parse_yaml(text, FILE))
    if len(checked.segments) < len(written):
        raise ConfigError("appending the suggestions did not give a list of segments",
                          Location(FILE, 1))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".suggested.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        load_segments(root)  # the whole project still loads
    except Exception:
        if old:
            path.write_text(old, encoding="utf-8")
        else:
            path.unlink(missing_ok=True)
        raise
    return written


_SEEN = "# suggested:"  # one per rule ever written: deleting an entry rejects it for good


def _history(text: str) -> set[str]:
    out = set()
    for line in text.splitlines():
        if line.startswith(_SEEN):
            try:
                out.add(" ".join(str(json.loads(line[len(_SEEN) :])).split()))
            except ValueError:
                continue
    return out


def _indent(text: str) -> tuple[str, str]:
    """How the file indents its list items and their keys (new entries match it)."""
    seen = False
    for line in text.splitlines():
        if line.startswith("segments:"):
            seen = True
        elif seen and line.lstrip().startswith("- "):
            pad = line[: len(line) - len(line.lstrip())]
            after = line.lstrip()[2:]
            return pad, pad + " " * (2 + len(after) - len(after.lstrip()))
    return "  ", "    "


def _flow(text: str) -> bool:
    """``segments: [...]`` on one line (a flow list cannot take appended block items)."""
    for line in text.splitlines():
        if line.startswith("segments:"):
            return bool(line.split(":", 1)[1].split("#", 1)[0].strip())
    return False
