"""User trait files (``traits/*.yml``): named per-customer values written in the rule language."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from crmseg.config import Strict, named_items
from crmseg.rules import Definition


class TraitSpec(Strict):
    name: str = Field(description="trait name, lower_snake_case")
    description: str = Field("", description="what the value means")
    expr: str = Field(description="a value expression in the rule language")


class TraitFile(Strict):
    traits: list[TraitSpec] = Field(default_factory=list)


def load_traits(root: Path) -> list[Definition]:
    """Every user trait of ``root/traits/*.yml``; duplicate names are an error."""
    out: list[Definition] = []
    for doc, i, spec in named_items(root, "traits", TraitFile, "traits", "trait"):
        text, line, column = doc.source_text(["traits", i, "expr"], spec.expr)
        out.append(
            Definition(
                name=spec.name,
                kind="trait",
                text=text,
                file=doc.file,
                line=line,
                column=column,
                description=spec.description,
            )
        )
    return out
