"""What the rest of crmseg hands to the rule compiler: definitions and the data's schema."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from crmseg.sources.model import DType


@dataclass(frozen=True)
class Definition:
    """One user-written (or built-in) segment or trait."""

    name: str
    kind: Literal["segment", "trait"]
    text: str | None = None  # rule (segment) or expr (trait)
    sql: str | None = None  # segment only: raw SQL returning customer_id
    file: str | None = None
    line: int = 1  # line in `file` where `text` starts
    column: int = 1  # column where `text` starts on that line
    description: str = ""


@dataclass(frozen=True)
class Schema:
    """Present canonical tables -> column -> dtype (canonical and extra columns).

    ``dated``: every customer has a ``signup_at``. When not, a customer without one exists
    from their first activity (see :func:`crmseg.rules.plan._existing`)."""

    tables: Mapping[str, Mapping[str, DType]]
    dated: bool = True


@dataclass(frozen=True)
class ModelTrait:
    """A per-customer value fitted outside the plan (a model output) that rules may use.

    ``type`` is a checker type ("number", "string", ...); ``tables`` the canonical tables the
    model needs (a project without them cannot use it)."""

    name: str
    type: Literal["number", "string", "bool", "time"]
    tables: tuple[str, ...] = ("orders",)
    description: str = ""


@dataclass(frozen=True)
class Derived:
    """A model output the plan computes from its own trait columns (a model scored in SQL):
    the traits in ``needs`` are computed first, then ``build(column)`` returns the output,
    ``column(name)`` giving each needed trait's column."""

    needs: tuple[str, ...]
    build: Callable[[Callable[[str], Any]], Any]


class Later:
    """A model output table the plan asks for only when it joins it, after the wide table's
    own grouped scans: the scoring's scans can then reuse the rows those read (see
    :class:`crmseg.segments.steps.StepCache`). Several names may share one; it is made once."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._table: Any = None

    def __call__(self) -> Any:
        if self._table is None:
            self._table = self._make()
        return self._table


@dataclass(frozen=True)
class Function:
    """A parameterised built-in: ``template`` with ``{param}`` replaced by quoted literals."""

    params: tuple[str, ...]
    template: str
    description: str
    example: str

    @property
    def signature(self) -> str:
        return ", ".join(self.params)


@dataclass(frozen=True)
class Library:
    """What rules may use beyond their own definitions and the data, supplied by the traits
    stage (``crmseg.traits.library``) so that the rule language knows no trait by name.

    ``traits``: built-in trait definitions; several of one name are alternatives in order of
    preference (the first the data supports wins). ``functions``: parameterised built-ins
    (``category_share('skincare')``). ``models``: model traits (``clv.*``, ...). ``phrases``:
    how the English renderer names a trait, (noun, counted?): counted traits read "at least 3
    orders", the others "a lifetime value of at least 500". ``hints``: by a model trait
    prefix (``propensity``), why a name under it may be unknown (where its names come from)."""

    traits: tuple[Definition, ...] = ()
    functions: Mapping[str, Function] = field(default_factory=dict)
    models: Mapping[str, ModelTrait] = field(default_factory=dict)
    phrases: Mapping[str, tuple[str, bool]] = field(default_factory=dict)
    hints: Mapping[str, str] = field(default_factory=dict)
