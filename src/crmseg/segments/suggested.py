"""``crmseg suggest --write``: suggested rules saved as segments awaiting review.

They go to ``segments/suggested.yml`` with an empty owner and purpose, so ``validate --strict``
flags each until a person has read it and filled them in. The file is appended to, never
rewritten: entries already there (perhaps reviewed and edited) stay as they are, and a rule
already saved is not added twice. The new text is checked as a whole project (names unique
across every segment file, the YAML valid) before it replaces the file in one rename.
"""

from __future__ import annotations

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
    """Append ``proposed`` as ``suggested.<key>_<n>`` segments; the names written (rules
    already in the file are skipped)."""
    path = root / FILE
    existing = load_segments(root)  # the project as it stands must load (else: its error)
    names = {s.name for s in existing}
    saved = {s.spec.rule for s in existing if s.file == FILE}
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    lines: list[str] = []
    written: list[str] = []
    n = 1
    for p in proposed:
        if p.rule in saved:
            continue
        while f"{LAYER}.{key}_{n}" in names:
            n += 1
        name = f"{LAYER}.{key}_{n}"
        names.add(name)
        saved.add(p.rule)
        written.append(name)
        lines += [
            f"  - name: {name}",
            f"    description: {json.dumps(p.description, ensure_ascii=False)}",
            "    owner:    # to fill in by the person who reviews and owns it",
            "    purpose:  # to fill in: what it is used for",
            "    tags: [suggested]",
            f"    rule: {json.dumps(p.rule, ensure_ascii=False)}",
        ]
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
    text += "\n".join(lines) + "\n"
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


def _flow(text: str) -> bool:
    """``segments: [...]`` on one line (a flow list cannot take appended block items)."""
    for line in text.splitlines():
        if line.startswith("segments:"):
            return bool(line.split(":", 1)[1].split("#", 1)[0].strip())
    return False
