"""Mutated project files: every mutation here makes the project invalid, and `validate` must
say so with a located error (file and line), never exit 0 and never fail internally.

The mutations are drawn with a seeded generator from what a careless edit does: an unknown
key, a key written twice, a required key deleted, a number replaced by text, a duration by a
word. ``CRMSEG_MUTATIONS`` sets how many (default 2,000, about 40 s).
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from crmseg import Workspace
from crmseg.errors import CrmsegError
from tests.activation.conftest import (
    CONFIG,
    MESSAGES,
    ORDERS,
    SEGMENTS,
    consent_csv,
    customers_csv,
)

# CI draws 1,000 (46 s); CRMSEG_MUTATIONS=20000 searches harder
MUTATIONS = int(os.environ.get("CRMSEG_MUTATIONS", "1000"))
CAMPAIGNS = """\
campaigns:
  - name: welcome
    description: A test campaign.
    owner: crm-team
    segment: custom.everyone
    exclude: [custom.low_ids]
    channel: email
    suppress:
      purchased_within: 7d
      messaged_within: 2d
      rules:
        big: ltv > 100
    frequency_cap:
      - max: 3
        per: 7d
    holdout: 0.2
    priority: 2
    splits:
      - name: a
        weight: 1
      - name: b
        weight: 2
    destination:
      - type: webhook
        url: http://127.0.0.1:9/x
        batch_size: 50
        max_attempts: 3
        headers:
          Authorization: Bearer x
      - type: file
        path: out/{campaign}.csv
"""
QUALITY = """\
quality:
  max_amount: 50000
  examples: 3
  checks:
    negative_amounts:
      severity: warn
      max_rate: 0.1
"""
FILES = {
    "crmseg.yml": CONFIG + QUALITY,
    "segments/core.yml": SEGMENTS,
    "campaigns/main.yml": CAMPAIGNS,
}
NUMERIC = {"holdout", "weight", "max", "priority", "batch_size", "max_attempts", "max_rate",
           "max_amount", "examples"}  # fmt: skip
DURATION = {"purchased_within", "messaged_within", "per"}
REQUIRED = {"segment", "channel", "per", "url", "type", "rule"}
FREE_FORM = {"headers", "rules"}  # user-named keys: anything goes there
LOCATED = re.compile(r"(crmseg\.yml|segments/core\.yml|campaigns/main\.yml):\d+")


def _base(root: Path) -> None:
    root.mkdir(parents=True)
    data = {
        "data/customers.csv": customers_csv(30),
        "data/orders.csv": ORDERS,
        "data/consent.csv": consent_csv(30),
        "data/messages.csv": MESSAGES,
        **FILES,
    }
    for rel, text in data.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _keys(text: str) -> list[tuple[yaml.Node, yaml.Node, tuple[str, ...]]]:
    """(key node, value node, path of keys) of every block-style key starting its line."""
    out = []
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(yaml.compose(text), ())]
    lines = text.splitlines()
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                line = lines[k.start_mark.line]
                before = line[: k.start_mark.column]
                if before.strip() in ("", "-") and v.start_mark.line == k.start_mark.line:
                    out.append((k, v, (*path, k.value)))
                stack.append((v, (*path, k.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, path) for v in node.value)
    return out


def mutate(text: str, rng: random.Random) -> tuple[str, str] | None:
    """One mutation that makes the file invalid, with its name; None if none applies."""
    keys = [(k, v, p) for k, v, p in _keys(text) if not FREE_FORM & set(p[:-1])]
    lines = text.splitlines(keepends=True)
    kind = rng.choice(["unknown", "duplicate", "delete", "number", "duration"])
    if kind in ("unknown", "duplicate"):
        k, v, _ = rng.choice(keys)
        if lines[k.start_mark.line][: k.start_mark.column].strip() == "-":
            return None  # the first key of a list item: a new line there would start a new key
        indent = " " * k.start_mark.column
        value = lines[k.start_mark.line][v.start_mark.column :].rstrip("\n")
        key = "zz_unknown" if kind == "unknown" else k.value
        lines.insert(k.start_mark.line, f"{indent}{key}: {value}\n")
        return "".join(lines), kind
    if kind == "delete":
        choices = [
            (k, v) for k, v, p in keys
            if p[-1] in REQUIRED and lines[k.start_mark.line].lstrip()[:1] != "-"
            and v.start_mark.line == v.end_mark.line
        ]  # fmt: skip
        if not choices:
            return None
        k, _ = rng.choice(choices)
        del lines[k.start_mark.line]
        return "".join(lines), kind
    wanted = NUMERIC if kind == "number" else DURATION
    choices = [(k, v) for k, v, p in keys if p[-1] in wanted and isinstance(v, yaml.ScalarNode)]
    if not choices:
        return None
    _, v = rng.choice(choices)
    line = lines[v.start_mark.line]
    word = rng.choice(["lots", "soon", "-", "1 2"]) if kind == "number" else "soon"
    lines[v.start_mark.line] = line[: v.start_mark.column] + word + line[v.end_mark.column :]
    return "".join(lines), kind


def check(root: Path) -> str:
    """``validate`` on the project: 'located' or the broken promise."""
    try:
        with Workspace.open(root) as ws:
            report = ws.validate()
    except CrmsegError as exc:
        return "located" if LOCATED.search(str(exc)) else f"unlocated: {exc}"
    except Exception as exc:
        return f"internal: {exc!r}"
    if not report.problems:
        return "accepted"
    first = report.problems[0]
    return "located" if LOCATED.search(first) else f"unlocated: {first}"


def test_mutated_projects_are_rejected_with_a_location(tmp_path: Path) -> None:
    base = tmp_path / "base"
    _base(base)
    assert check(base) == "accepted"  # the unmutated project is valid
    rng = random.Random(20261202)
    counts: Counter[str] = Counter()
    done = 0
    while done < MUTATIONS:
        rel = rng.choice(list(FILES))
        mutated = mutate(FILES[rel], rng)
        if mutated is None:
            continue
        text, kind = mutated
        root = tmp_path / f"m{done}"
        shutil.copytree(base, root)
        (root / rel).write_text(text)
        outcome = check(root)
        assert outcome == "located", f"{kind} in {rel}: {outcome}\n{text}"
        counts[kind] += 1
        shutil.rmtree(root)
        done += 1
    print(f"\n{MUTATIONS:,} mutated projects, all rejected with a location: {dict(counts)}")
    assert len(counts) == 5  # every kind of mutation was drawn


@pytest.mark.parametrize("rel", list(FILES))
def test_the_mutation_base_is_valid_per_file(rel: str) -> None:
    assert yaml.safe_load(FILES[rel])
