"""Shared helpers for the benchmarks: time a command as its own process, as a user runs it.

Every timed step is a separate process; its wall time and its own peak resident set size
(from ``wait4``'s rusage of exactly that child) are reported next to a baseline's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CRMSEG = str(Path(sys.executable).parent / "crmseg")


@dataclass
class Timed:
    label: str
    seconds: float
    peak_mib: float
    stdout: str

    def line(self, baseline: Timed | None = None) -> str:
        ratio = f"  {self.seconds / baseline.seconds:5.2f}x" if baseline else ""
        return f"{self.label:<60} {self.seconds:8.2f} s {self.peak_mib:7,.0f} MiB{ratio}"


def timed(label: str, *cmd: str, env: dict[str, str] | None = None) -> Timed:
    """Run ``cmd`` as its own process; a failing step stops the benchmark with its stderr."""
    with tempfile.TemporaryFile(mode="w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
            text=True,
        )
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{label}: exit {proc.returncode}\n{err.read()[-3000:]}")
    return Timed(label, seconds, usage.ru_maxrss / 1024, out)


def python(code: str, *args: str) -> list[str]:
    """A command line running ``code`` in this interpreter."""
    return [sys.executable, "-c", code, *args]


def report(title: str, rows: list[tuple[Timed, Timed | None]]) -> None:
    print(f"== {title}")
    for row, baseline in rows:
        print(row.line(baseline))


def demo_shop(
    shop: Path, customers: int, as_of: str, *, then: list[list[str]] | None = None
) -> None:
    """Generate the demo shop at ``shop`` and run it once at ``as_of`` (then ``then``, more
    crmseg commands), unless a run state is already there."""
    import shutil

    if (shop / ".crmseg" / "state.duckdb").exists():
        return
    shutil.rmtree(shop, ignore_errors=True)
    timed("generate", CRMSEG, "init", str(shop), "--demo", "--customers", str(customers))
    timed("first run", CRMSEG, "run", "-p", str(shop), "--as-of", as_of)
    for cmd in then or []:
        timed(cmd[0], CRMSEG, *cmd, "-p", str(shop))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (benchmarks talk to loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_key(shop: Path, role: str) -> str:
    """A new API key of ``role`` for the project at ``shop``, made in its own process."""
    code = (
        "import sys; from crmseg.workspace import Workspace; "
        "from crmseg.server.keys import KeyStore\n"
        "with Workspace.open(sys.argv[1]) as ws: print(KeyStore(ws.state).create(sys.argv[2])[1])"
    )
    out = subprocess.run(python(code, str(shop), role), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return out.stdout.strip().splitlines()[-1]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
