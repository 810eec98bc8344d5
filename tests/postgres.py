"""A real PostgreSQL server for the tests: a cluster made by ``initdb`` in a temporary folder,
started with ``pg_ctl`` on a free port of 127.0.0.1 and stopped at the end.

The binaries come from PATH or Debian's ``/usr/lib/postgresql/<version>/bin`` (``.ci/run``
installs the ``postgresql`` package). Postgres refuses to run as root: as root the cluster
belongs to the ``postgres`` user the package creates. Without the binaries the cases are
skipped, unless ``CRMSEG_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str

    def database(self, name: str) -> str:
        """A new empty database (dropped first if a previous case left it)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            con.execute(f'CREATE DATABASE "{name}"')
        return name

    def backend(self, database: str) -> str:
        """The ``backend:`` line of a crmseg.yml using ``database``."""
        return (
            f"backend: {{kind: postgres, host: {self.host}, port: {self.port}, "
            f"user: {self.user}, database: {database}}}"
        )


def _bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start() -> Iterator[Server]:
    """The pytest side of :func:`cluster`: skipped (or failed, in CI) without the binaries."""
    pytest.importorskip("psycopg", reason="pip install 'crmseg[postgres]'")
    if _bin() is None:
        if os.environ.get("CRMSEG_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required here but initdb/pg_ctl were not found")
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    with cluster() as server:
        yield server


@contextlib.contextmanager
def cluster() -> Iterator[Server]:
    """A new cluster on a free port of 127.0.0.1, stopped and deleted on exit (the
    benchmarks use it too)."""
    bindir = _bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
    # its own folder under /tmp: pytest's temporary folders are closed to other users
    folder = Path(tempfile.mkdtemp(prefix="crmseg-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the package's postgres user owns the cluster
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, user="postgres")
    data, port = folder / "data", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip()[-2000:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "crmseg", "--auth=trust",
            "-E", "UTF8", "--no-sync")  # fmt: skip
        options = (
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
            "-w", "start")  # fmt: skip
        try:
            yield Server("127.0.0.1", port, "crmseg")
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
