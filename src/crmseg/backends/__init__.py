"""Backends: where compiled plans run (DuckDB embedded by default), and the state store."""

from __future__ import annotations

from pathlib import Path

from crmseg.backends.base import CANONICAL_SCHEMA, Backend
from crmseg.backends.state import DuckDBState, StateStore
from crmseg.config import BackendConfig, StateConfig

__all__ = ["CANONICAL_SCHEMA", "Backend", "StateStore", "connect", "open_state", "state_exists"]


def connect(config: BackendConfig, root: Path, memory: bool = False) -> Backend:
    """Open the configured backend (its path is relative to the project folder), or, with
    ``memory``, an empty one of the same engine that disappears on close (an in-memory DuckDB;
    a scratch database on a server)."""
    backend: Backend
    if config.kind == "postgres":
        from crmseg.backends.postgres import PostgresBackend

        backend = PostgresBackend(config, scratch=memory)
    elif config.kind == "pyspark":
        from crmseg.backends.spark import SparkBackend

        folder = None if memory else root / config.path
        backend = SparkBackend(folder, master=config.master, conf=config.conf)
    elif config.kind != "duckdb":
        from crmseg.backends.generic import IbisBackend

        file = str(root / config.path) if "path" in config.model_fields_set else None
        backend = IbisBackend(config, file, scratch=memory)
    else:
        from crmseg.backends.duckdb import DuckDBBackend

        path: Path | str = ":memory:" if memory else root / config.path
        backend = DuckDBBackend(path, threads=config.threads, memory_limit=config.memory_limit)
    backend.written = config.sql_dialect or backend.sqlglot_dialect
    return backend


def open_state(config: StateConfig, root: Path) -> StateStore:
    """Open (and create when missing) the configured state database."""
    if config.kind == "postgres":
        from crmseg.backends.pgstate import PostgresState

        return PostgresState(config)
    return DuckDBState(root / config.path)


def state_exists(config: StateConfig, root: Path) -> bool:
    """Whether anything was ever recorded: read-only commands must not create a state file.
    A state on a server is there to be read (its schema is made on first open)."""
    return config.kind == "postgres" or (root / config.path).exists()
