"""The rule language: parse, type-check and compile segment rules and trait expressions.

plan = build_plan(definitions, schema, builtins=crmseg.traits.library(config))
wide = plan.wide(tables, as_of)        # one Ibis expression for the whole run
"""

from crmseg.rules.ast import Node
from crmseg.rules.defs import Definition, Library, Schema
from crmseg.rules.explain import Explanation, Step
from crmseg.rules.parser import parse, render
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
