"""Backends: where compiled plans run (DuckDB embedded by default), and the state store."""

from __future__ import annotations

from pathlib import Path

from crmseg.backends.base import CANONICAL_SCHEMA, Backend
from crmseg.config import BackendConfig

__all__ = ["CANONICAL_SCHEMA", "Backend", "connect"]


def connect(config: BackendConfig, root: Path) -> Backend:
    """Open the configured backend; paths are relative to the project folder."""
    from crmseg.backends.duckdb import DuckDBBackend

    path = Path(config.path)
    if not path.is_absolute():
        path = root / path
    return DuckDBBackend(path, threads=config.threads, memory_limit=config.memory_limit)
