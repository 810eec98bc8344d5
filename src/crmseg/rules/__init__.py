"""The rule language: parse, type-check and compile segment rules and trait expressions.

plan = build_plan(definitions, schema, builtins=crmseg.traits.library(config))
wide = plan.wide(tables, as_of)        # one Ibis expression for the whole run

Definitions, parsing and English import no engine; the compiler (``Plan``, ``build_plan``,
``Explanation``) loads Ibis on first use, so commands that only read definitions stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crmseg.rules.ast import Node
from crmseg.rules.defs import Definition, Library, Schema
from crmseg.rules.parser import parse, render

if TYPE_CHECKING:
    from crmseg.rules.explain import Explanation, Step
    from crmseg.rules.plan import Plan, build_plan

__all__ = [
    "Definition",
    "Explanation",
    "Library",
    "Node",
    "Plan",
    "Schema",
    "Step",
    "build_plan",
    "parse",
    "render",
]

_LAZY = {
    "Plan": "crmseg.rules.plan",
    "build_plan": "crmseg.rules.plan",
    "Explanation": "crmseg.rules.explain",
    "Step": "crmseg.rules.explain",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crmseg.rules' has no attribute {name!r}")
