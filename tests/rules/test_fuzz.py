"""Generated rules, valid and hostile, on a real project: every rule is either rejected with a
file:line:column, or computes (and renders in English) without an internal error.

``CRMSEG_FUZZ_RULES`` sets how many (default 500 here; ``benchmarks/bench_fuzz.py`` runs
10,000 and prints the figures).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crmseg import Workspace
from crmseg.demo.scaffold import init_project
from crmseg.errors import BackendError, CrmsegError, RuleError, RuleErrors
from crmseg.rules.defs import Definition
from tests.rules.rulegen import RuleGen

AS_OF = datetime(2026, 11, 1)
RULES = int(os.environ.get("CRMSEG_FUZZ_RULES", "500"))
FILE = "segments/fuzz.yml"
LOCATED = re.compile(rf"^{re.escape(FILE)}:\d+:\d+: ")


def _definition(i: int, text: str) -> Definition:
    return Definition(f"custom.fuzz_{i}", "segment", text, None, FILE, 10 + i, 11)


def _printable(lines: list[str]) -> bool:
    try:
        "\n".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def classify(ws: Workspace, tables: dict[str, Any], texts: list[str]) -> Counter[str]:
    """Counts per outcome; an AssertionError names the first rule that breaks a promise."""
    out: Counter[str] = Counter()
    valid: list[Definition] = []
    for i, text in enumerate(texts):
        d = _definition(i, text)
        try:
            plan = ws.compiled.plan(tables, [d])
            plan.english(d.name)
        except (RuleError, RuleErrors) as exc:
            lines = exc.lines()
            assert LOCATED.match(lines[0]), (text, lines[0])
            assert _printable(lines), text
            out["rejected"] += 1
            continue
        except CrmsegError as exc:
            raise AssertionError(f"unlocated error for {text!r}: {exc}") from None
        except Exception as exc:
            raise AssertionError(f"internal error for {text!r}: {exc!r}") from exc
        valid.append(d)
    out["runtime"] += _compute(ws, tables, valid)
    out["computed"] = len(valid) - out["runtime"]
    return out


def _compute(ws: Workspace, tables: dict[str, Any], defs: list[Definition]) -> int:
    """Compute ``defs`` together; a batch the engine refuses is split until the rules it
    refuses are alone (a run names such a segment with its file and line). Returns how many
    the engine refused."""
    if not defs:
        return 0
    try:
        plan = ws.compiled.plan(tables, defs)
        names = [d.name for d in defs]
        wide = plan.wide(tables, AS_OF, select=names)
        ws.backend.execute(wide.select("customer_id", *names))
        return 0
    except BackendError as exc:
        if len(defs) == 1:
            print(f"refused by the engine: {defs[0].text!r}: {exc}")
            return 1
    except CrmsegError as exc:
        raise AssertionError(f"unlocated error computing {[d.text for d in defs]}: {exc}") from None
    except Exception as exc:
        if len(defs) == 1:
            raise AssertionError(f"internal error computing {defs[0].text!r}: {exc!r}") from exc
    half = len(defs) // 2
    return _compute(ws, tables, defs[:half]) + _compute(ws, tables, defs[half:])


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "shop"
    init_project(root, demo=True, customers=400, seed=5)
    with Workspace.open(root) as ws:
        ws.run(as_of=AS_OF)
    return root


def test_generated_rules_never_break(shop: Path) -> None:
    gen = RuleGen(seed=20261202)
    texts = [gen.rule() for _ in range(RULES)]
    with Workspace.open(shop) as ws:
        tables = {n: ws.backend.canonical(n) for n in ws.backend.canonical_tables()}
        counts = classify(ws, tables, texts)
    print(f"\n{RULES:,} generated rules: {dict(counts)}")
    assert sum(counts.values()) == RULES
    assert counts["rejected"] and counts["computed"]  # the generator reaches both sides
