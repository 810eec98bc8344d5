"""User trait files (``traits/*.yml``): named per-customer values written in the rule language."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from crmseg.config import Strict, load_yaml, validate
from crmseg.errors import ConfigError
from crmseg.rules import Definition


class TraitSpec(Strict):
    name: str = Field(description="trait name, lower_snake_case")
    description: str = Field("", description="what the value means")
    expr: str = Field(description="a value expression in the rule language")


class TraitFile(Strict):
    traits: list[TraitSpec] = Field(default_factory=list)


def load_traits(root: Path) -> list[Definition]:
    out: list[Definition] = []
    seen: dict[str, str] = {}
    for path in sorted((root / "traits").glob("*.y*ml")):
        try:
            display = str(path.relative_to(root))
        except ValueError:
            display = str(path)
        doc = load_yaml(path, display)
        parsed = validate(TraitFile, doc)
        for i, spec in enumerate(parsed.traits):
            where = doc.location(["traits", i, "name"])
            if spec.name in seen:
                raise ConfigError(
                    f"duplicate trait name {spec.name!r} (first defined at {seen[spec.name]})",
                    where,
                )
            seen[spec.name] = f"{where.file}:{where.line}"
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
