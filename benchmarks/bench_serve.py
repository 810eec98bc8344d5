"""Benchmark: `crmseg serve` under load on the 500k-customer demo shop, over loopback.

    .venv/bin/python benchmarks/bench_serve.py [--customers 500000] [--workdir DIR]
        [--clients 100] [--seconds 60]

The shop is generated and run once (kept with ``--workdir``). A viewer key is made, the server
starts as its own process (``crmseg serve --no-schedule`` on a free 127.0.0.1 port), and
``--clients`` threads, each with its own keep-alive connection, ask for 60 s (and at most
200,000 requests): members pages (1,000 rows, a random segment, the first page or the page
after a random member) and segment pages (``GET /segments/{name}``), half each. Printed: per
kind requests/s, p50 and p99 latency and errors, against the targets (members p99 <= 200 ms,
segment page p99 <= 500 ms, no errors). The loop stops by itself; it only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _harness import CRMSEG, api_key, demo_shop, free_port, percentile

AS_OF = "2026-11-01"
MOST = 200_000  # requests in all, whatever the time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_serve_"))
    shop = work / f"serve{args.customers}"
    demo_shop(shop, args.customers, AS_OF)
    key = api_key(shop, "viewer")
    port = free_port()
    server = subprocess.Popen(
        [CRMSEG, "serve", "-p", str(shop), "--port", str(port), "--no-schedule"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": key}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(server.communicate()[1].decode()[-3000:]) from None
                time.sleep(0.3)
        req = urllib.request.Request(base + "/segments", headers=headers)
        with urllib.request.urlopen(req, timeout=600) as resp:
            names = [s["name"] for s in json.loads(resp.read())]
        cursors: dict[str, list[str | None]] = {}
        for name in names:  # a few cursors per segment, from its first pages
            req = urllib.request.Request(f"{base}/segments/{name}/members?limit=1000",
                                         headers=headers)  # fmt: skip
            with urllib.request.urlopen(req, timeout=600) as resp:
                cursors[name] = [None, json.loads(resp.read())["next"]]
        lat: dict[str, list[float]] = {"members": [], "segment": []}
        errors: dict[str, int] = {"members": 0, "segment": 0}
        lock = threading.Lock()
        count = [0]
        stop_at = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while time.monotonic() < stop_at:
                with lock:
                    if count[0] >= MOST:
                        return
                    count[0] += 1
                name = rng.choice(names)
                if rng.random() < 0.5:
                    kind = "members"
                    cursor = rng.choice(cursors[name])
                    path = f"/segments/{name}/members?limit=1000"
                    path += f"&cursor={cursor}" if cursor else ""
                else:
                    kind, path = "segment", f"/segments/{name}"
                start = time.perf_counter()
                try:
                    con.request("GET", path, headers=headers)
                    resp = con.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    con.close()
                    con = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                took = time.perf_counter() - start
                with lock:
                    lat[kind].append(took)
                    errors[kind] += not ok
            con.close()

        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        print(f"== crmseg serve at {args.customers:,} customers: {args.clients} clients, "
              f"{elapsed:.0f} s, {len(names)} segments")  # fmt: skip
        targets = {"members": 0.2, "segment": 0.5}
        for kind, values in lat.items():
            p99 = percentile(values, 0.99)
            verdict = "ok" if p99 <= targets[kind] and not errors[kind] else "MISSED"
            p50 = percentile(values, 0.5)
            print(f"{kind:<8} {len(values) / elapsed:8.1f} req/s  p50 {p50 * 1000:7.1f} ms"
                  f"  p99 {p99 * 1000:7.1f} ms  errors {errors[kind]}  "
                  f"(target p99 <= {targets[kind] * 1000:.0f} ms: {verdict})")  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
