"""The exception tree. Every error crmseg raises on purpose is a ``CrmsegError``.

The CLI prints ``str(error)`` as one red line; each subclass makes that line say *where*
(file, line, column, field, table) and *what was expected*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class CrmsegError(Exception):
    """Root of every error crmseg raises on purpose."""

    exit_code = 1

    def lines(self) -> list[str]:
        """One line per problem; the CLI prints these (the first one in red)."""
        return [str(self)]


@dataclass(frozen=True)
class Location:
    """Where a problem is: a file, optionally a line/column or a dotted field path."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts = [self.file or "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        text = ":".join(parts)
        if self.field:
            text += f" [{self.field}]"
        return text


class LocatedError(CrmsegError):
    """An error at a known place in a user's file."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location or Location()
        super().__init__(f"{self.location}: {message}")


class ConfigError(LocatedError):
    """crmseg.yml or a project YAML file is malformed or inconsistent."""


class SourceError(CrmsegError):
    """A source table cannot be read or does not match the canonical data model.

    Carries every problem found (``problems``), so a user fixes them all in one go.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        head = self.problems[0] if self.problems else "source error"
        more = len(self.problems) - 1
        super().__init__(head + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""))

    def lines(self) -> list[str]:
        return self.problems


class BackendError(CrmsegError):
    """The database refused a statement; ``sql`` is what was sent."""

    def __init__(self, message: str, sql: str | None = None) -> None:
        self.sql = sql
        super().__init__(message)


class StateError(CrmsegError):
    """The state database (runs, memberships, logs) is missing, locked or inconsistent."""


class RuleError(LocatedError):
    """Base of rule language errors; location has line and column."""

    def __init__(self, message: str, location: Location | None = None, excerpt: str = "") -> None:
        self.excerpt = excerpt
        super().__init__(message, location)

    def lines(self) -> list[str]:
        return [str(self), *self.excerpt.splitlines()]


class RuleSyntaxError(RuleError):
    """A rule does not parse."""


class RuleTypeError(RuleError):
    """A rule parses but does not make sense against the project's schema."""


class RuleErrors(CrmsegError):
    """Several located rule errors of one file (or project), reported together."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        head = str(self.errors[0]) if self.errors else "rule errors"
        more = len(self.errors) - 1
        super().__init__(head + (f" (and {more} more error{'s' * (more > 1)})" if more else ""))

    def lines(self) -> list[str]:
        return [line for e in self.errors for line in e.lines()]


class SegmentError(CrmsegError):
    """A segment cannot be found, run or stored."""


class ModelError(CrmsegError):
    """A statistical model cannot be fitted or used (``group``: churn, clv, cluster)."""

    group: str | None = None


class SuggestError(CrmsegError):
    """A ``suggest`` target that cannot be searched (too rare, always true, no customers)."""


class ForgetError(CrmsegError):
    """A forget request that cannot be carried out as asked (nothing is changed)."""


class ActivationError(CrmsegError):
    """A campaign audience or export failed."""


class QualityError(CrmsegError):
    """A data-quality check at severity ``error`` failed; the run wrote nothing.

    ``problems`` holds one line per failed check (the first is the message).
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        head = self.problems[0] if self.problems else "data quality check failed"
        more = len(self.problems) - 1
        tail = f" (and {more} more failed check{'s' * (more > 1)})" if more else ""
        super().__init__(head + tail)

    def lines(self) -> list[str]:
        return [str(self), *self.problems[1:]]


class NotFoundError(CrmsegError):
    """Something asked for by name or id does not exist (the server answers 404)."""


class UnknownSegmentError(SegmentError, NotFoundError):
    """No segment has the name asked for."""


class UnknownCustomerError(SegmentError, NotFoundError):
    """No loaded customer has the id asked for."""


class UnknownCampaignError(ActivationError, NotFoundError):
    """No campaign has the name asked for."""


class ConflictError(CrmsegError):
    """The state does not allow it now: a decided change, a definition that moved on."""


class ForbiddenError(CrmsegError):
    """The caller may not do this (approving their own change)."""


class ApiKeyError(CrmsegError):
    """An unknown API key id, or a role that does not exist."""


class MissingDependencyError(CrmsegError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is not installed: install it with pip install 'crmseg[{extra}]'"
        )


class EventError(CrmsegError):
    """Items of a stream batch are malformed: ``problems`` are ``(index, field, what)``, every
    one of them (the batch is taken all or nothing)."""

    def __init__(self, problems: Sequence[tuple[int, str, str]], source: str = "batch") -> None:
        self.problems = list(problems)
        self.source = source
        shown = "; ".join(f"[{i}].{f}: {what}" for i, f, what in self.problems[:20])
        more = len(self.problems) - 20
        count = len({i for i, _, _ in self.problems})
        super().__init__(
            f"{source}: {count} bad item{'s' * (count != 1)}, nothing stored: {shown}"
            + (f" (and {more} more)" if more > 0 else "")
        )

    @property
    def location(self) -> str:
        i, field, _ = self.problems[0]
        return f"{self.source}[{i}].{field}"


class BackpressureError(CrmsegError):
    """The stream is behind: nothing was stored; send again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)
