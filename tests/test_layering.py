"""Data flows one way: sources -> quality -> identity -> traits/models -> segments ->
activation -> stream (real time: it writes segments' history and delivers like activation) ->
measurement; privacy (forgetting people) works on every stage's data and comes last. A stage
never imports a stage to its right; the shared leaves
(rules, backends, errors, config) import no stage at all. Imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "crmseg"

# stage -> rank; traits and models are one stage
STAGES = {
    "sources": 0,
    "quality": 1,
    "identity": 2,
    "traits": 3,
    "models": 3,
    "segments": 4,
    "activation": 5,
    "stream": 6,
    "measurement": 7,
    "privacy": 8,
}
LEAVES = ("rules", "backends", "errors", "config")
FACADES = ("workspace", "cli", "server", "__init__", "__main__", "demo")
# shared by every stage and leaf: the canonical data model (with which columns are personal
# and their one mask) and contact normalisation
ANYWHERE = ("crmseg.sources.model", "crmseg.sources.normalize", "crmseg.sources.pii")


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, text: str | None = None) -> set[str]:
    """Every ``crmseg.*`` module ``path`` imports (from ``text`` if given), at any depth:
    imports inside functions and ``if TYPE_CHECKING:`` blocks count too."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.add(name)
            if (SRC.parent / name.replace(".", "/")).is_dir():  # from crmseg import traits
                out.update(f"{name}.{a.name}" for a in node.names)
    return {m for m in out if m == "crmseg" or m.startswith("crmseg.")}


def _part(module: str) -> str:
    """The top-level part of crmseg a module belongs to (``rules``, ``traits``, ...)."""
    return module.split(".")[1] if module.count(".") else "__init__"


def _allowed(importer: str, imported: str) -> bool:
    if imported.startswith(ANYWHERE) or imported == "crmseg":
        return True
    src, dst = _part(importer), _part(imported)
    if src in FACADES:
        return True  # the facades use everything
    if dst in FACADES:
        return False  # ... and nothing uses them
    if dst in LEAVES:
        return True
    if src in LEAVES:
        return False
    return STAGES[dst] <= STAGES[src]


def violations() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        importer = _module(path)
        for imported in sorted(_imports(path)):
            if not _allowed(importer, imported):
                out.append(f"{importer} imports {imported}")
    return out


def test_every_part_is_classified() -> None:
    parts = {_part(_module(p)) for p in SRC.rglob("*.py")}
    assert parts <= {*STAGES, *LEAVES, *FACADES}, parts - {*STAGES, *LEAVES, *FACADES}


def test_no_stage_imports_to_its_right_and_no_leaf_imports_a_stage() -> None:
    assert violations() == []


def test_the_check_sees_imports_inside_functions() -> None:
    code = """
from typing import TYPE_CHECKING

from crmseg.rules.defs import Definition

if TYPE_CHECKING:
    from crmseg.segments.catalog import Segment


def f() -> None:
    from crmseg.traits.builtin import PHRASES
    from . import types
    from .. import errors
"""
    found = _imports(SRC / "rules" / "plan.py", code)
    assert found >= {
        "crmseg.rules.defs",
        "crmseg.segments.catalog",
        "crmseg.traits.builtin",
        "crmseg.rules.types",
        "crmseg.errors",
    }
    bad = [m for m in sorted(found) if not _allowed("crmseg.rules.plan", m)]
    assert bad == ["crmseg.segments.catalog", "crmseg.traits.builtin"]
    assert not _allowed("crmseg.quality.checks", "crmseg.identity.normalize")
    assert not _allowed("crmseg.segments.catalog", "crmseg.workspace")
    assert _allowed("crmseg.quality.checks", "crmseg.sources.normalize")
    assert _allowed("crmseg.backends.duckdb", "crmseg.sources.model")
    assert _allowed("crmseg.models.traits", "crmseg.traits")
    assert _allowed("crmseg.workspace", "crmseg.measurement.lift")


ENGINES = ("duckdb", "psycopg", "pyspark", "sqlalchemy")


def _engine_imports(path: Path) -> set[str]:
    """The database drivers ``path`` imports, at any depth."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        out.update(n.split(".")[0] for n in names if n.split(".")[0] in ENGINES)
    return out


def test_engines_appear_only_in_backends() -> None:
    """Stages speak Ibis and the state interface; only crmseg.backends talks to a driver."""
    found = {
        _module(path): sorted(_engine_imports(path))
        for path in SRC.rglob("*.py")
        if not _module(path).startswith("crmseg.backends") and _engine_imports(path)
    }
    assert found == {}
    assert _engine_imports(SRC / "backends" / "local.py") == {"duckdb"}  # the check sees them
