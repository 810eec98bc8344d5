"""The project's catalog compiled once: user traits and segments with the project's library
(its lifecycle thresholds, RFM grid, value tiers) and model traits.

Every consumer (runs, preview, explain, diff, unit tests, activation) asks this one object for a
plan, so they cannot disagree; a plan is built once per (definitions, schema) and reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from crmseg.config import Config

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.rules import Definition, Library, Plan
    from crmseg.rules.plan import ModelProvider
    from crmseg.segments.catalog import Segment


class LazyModels:
    """The plan's model provider, importing and building the models stage only when a rule
    first needs a model trait (most commands never do)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self.fitter: Any = None

    def get(self) -> Any:
        """The models stage's provider, built on first use."""
        if self.fitter is None:
            self.fitter = self._make()
        return self.fitter

    def __call__(
        self, names: Sequence[str], tables: Mapping[str, ir.Table], at: Any, steps: Any = None
    ) -> Any:
        return self.get()(names, tables, at, steps)

    def status(self) -> dict[str, Any]:
        """The fits the latest scoring used, per model group (for the run's record)."""
        return self.fitter.status() if self.fitter is not None else {}

    def discard_new(self) -> None:
        """Forget fits made by a run that rolled back (their records are gone with it)."""
        if self.fitter is not None:
            self.fitter.discard_new()

    def committed(self) -> None:
        """The run that made the latest fits committed."""
        if self.fitter is not None:
            self.fitter.committed()


class Catalog:
    """Definitions plus library; ``plan(tables)`` compiles them for that data's schema."""

    def __init__(
        self,
        config: Config,
        segments: Sequence[Segment],
        traits: Sequence[Definition],
        model_provider: ModelProvider | None = None,
    ) -> None:
        self.config = config
        self.segments = list(segments)
        self.traits = list(traits)
        self.model_provider = model_provider
        self._library: Library | None = None
        self._plans: dict[tuple[str, str, bool], Plan] = {}

    @property
    def library(self) -> Library:
        if self._library is None:
            from crmseg.traits import library

            self._library = library(self.config)
        return self._library

    def segment(self, name: str) -> Segment:
        """The segment named ``name``; an unknown name is an error with the closest match."""
        from crmseg.segments.catalog import find_segment

        return find_segment(self.segments, name)

    @property
    def definitions(self) -> list[Definition]:
        return [*self.traits, *(s.definition for s in self.segments)]

    @property
    def hash(self) -> str:
        """Changes whenever a definition or a setting of the built-in library changes."""
        body = {
            "definitions": [_definition_key(d) for d in self.definitions],
            "library": [
                self.config.lifecycle.model_dump(mode="json"),
                self.config.rfm.model_dump(mode="json"),
                self.config.value_tiers.model_dump(mode="json"),
            ],
        }
        return _digest(body)

    def plan(self, tables: Mapping[str, ir.Table], extra: Sequence[Definition] = ()) -> Plan:
        """The checked plan for data shaped like ``tables`` (loaded or planned), with
        ``extra`` definitions (activation's suppression rules) next to the project's."""
        from crmseg.sources.loader import dated, schema_from

        return self.plan_for(schema_from(tables), extra, dated(tables))

    def plan_for(
        self,
        schema: Mapping[str, Mapping[str, str]],
        extra: Sequence[Definition] = (),
        dated: bool = True,
    ) -> Plan:
        from crmseg.rules import Schema, build_plan

        key = (_digest(schema), _digest([_definition_key(d) for d in extra]), dated)
        plan = self._plans.get(key)
        if plan is None:
            plan = build_plan(
                [*self.definitions, *extra],
                Schema(schema, dated),  # type: ignore[arg-type]
                builtins=self.library,
                model_provider=self.model_provider,
            )
            self._plans[key] = plan
        return plan

    def english(self, tables: Mapping[str, ir.Table]) -> dict[str, str]:
        """The English of every segment (``sql:`` ones say so)."""
        plan = self.plan(tables)
        return {s.name: plan.english(s.name) for s in self.segments}


def _definition_key(d: Definition) -> list[Any]:
    return [d.kind, d.name, d.text, d.sql, d.file, d.line, d.column]


def _digest(body: Any) -> str:
    text = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
