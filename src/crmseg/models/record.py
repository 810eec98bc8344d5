"""The record every fit leaves (kept apart from the models so reading it imports no scipy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class ModelRecord:
    """What one fit did: parameters, fit time, data window and quality numbers."""

    model: str
    as_of: datetime
    params: dict[str, float]
    fit_seconds: float
    customers: int
    window_start: datetime | None
    window_end: datetime
    metrics: dict[str, Any] = field(default_factory=dict)
