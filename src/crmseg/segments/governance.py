"""Governance over the catalog: lint findings, where segments are used, catalog pages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from crmseg.segments.catalog import Segment

NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_REF = re.compile(r"in_segment\(\s*'([^']+)'\s*\)")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    severity: Literal["warning", "error"]
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


# where `crmseg suggest --write` puts rules awaiting review: always a known layer
SUGGESTED = "suggested"


def lint(segments: Sequence[Segment], layers: Sequence[str]) -> list[Finding]:
    """Naming, documentation and reference findings for every segment."""
    out: list[Finding] = []
    names = {s.name for s in segments}
    for seg in segments:

        def add(severity: Literal["warning", "error"], message: str, seg: Segment = seg) -> None:
            out.append(Finding(seg.file, seg.line, severity, f"{seg.name}: {message}"))

        if not NAME.match(seg.name):
            add("warning", "name should be layer.name in lower_snake_case")
        elif seg.layer not in layers and seg.layer != SUGGESTED:  # a typo, or undeclared
            add("error", f"unknown layer {seg.layer!r} (declared: {', '.join(layers)})")
        if not seg.spec.description.strip():
            add("warning", "missing description")
        if not (seg.spec.owner or "").strip():
            add("warning", "missing owner")
        if seg.layer == SUGGESTED and not (seg.spec.purpose or "").strip():
            add("warning", "suggested rule awaiting review: fill in purpose (and owner)")
        if seg.spec.checks:
            for other in seg.spec.checks.max_overlap_with:
                if other not in names:
                    add("error", f"checks.max_overlap_with names unknown segment {other!r}")
    return out


def usage(root: Path, segments: Sequence[Segment]) -> dict[str, list[str]]:
    """segment -> where it is used: campaigns that name it, segments that reference it."""
    names = {s.name for s in segments}
    used: dict[str, list[str]] = {n: [] for n in names}
    for seg in segments:
        for ref in _REF.findall(seg.spec.rule or ""):
            if ref in used:
                used[ref].append(f"segment {seg.name}")
    for path in sorted((root / "campaigns").glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # a broken campaign file is reported by campaign validation
        for campaign in (data or {}).get("campaigns", []) if isinstance(data, dict) else []:
            if not isinstance(campaign, dict):
                continue
            label = f"campaign {campaign.get('name', path.stem)}"
            for text in _strings(campaign):
                for name in names:
                    mentioned = (
                        text == name
                        or f"'{name}'" in text
                        or re.search(rf"(^|[\s(]){re.escape(name)}($|[\s)])", text)
                    )
                    if mentioned and label not in used[name]:
                        used[name].append(label)
    return used


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
