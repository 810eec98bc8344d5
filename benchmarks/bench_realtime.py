"""Benchmark: real time through `crmseg serve` on the 500k-customer demo shop, over loopback.

    .venv/bin/python benchmarks/bench_realtime.py [--customers 500000] [--workdir DIR]
        [--seconds 60] [--producers 4] [--batch 2500]

The shop is generated and run once (kept with ``--workdir``), with ten realtime segments
(windows from 15 minutes to a year, a ``then not ... within`` sequence, consent, two
``in_segment`` references). The server starts as its own process (``crmseg serve
--no-schedule``), and once its stream processor runs, ``--producers`` threads post batches of
``--batch`` events for random customers as fast as the server takes them (or at ``--rate``
events/s in all), for ``--seconds``
(at most 4,000 batches; a 429 waits its Retry-After). A consumer long-polls the changes of
``behavior.rt_cart_30min``; a batch's latency is from the moment it was sent to the moment
the consumer holds its first entry (every batch carries carts, so every batch has one).

Printed: events/s sustained (events both accepted and evaluated, over the wall time: the
server's ``/events/status`` counts those evaluated), p50/p99 event-to-trigger latency (also
split at the instant the batch's evaluation began, as its change is stamped: the wait before
it, and evaluation plus delivery after it), 429s, and the server's peak resident memory
(VmHWM), against the targets (>= 50,000 events/s, p99 <= 500 ms, peak RSS <= 2 GB).
Everything talks to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from _harness import CRMSEG, api_key, demo_shop, free_port, percentile

AS_OF = "2026-11-01"
MOST = 4_000  # batches in all, whatever the time
WATCHED = "behavior.rt_cart_30min"
NAMES = ("added_to_cart", "page_view", "login", "order_completed", "product_viewed")
SEGMENTS = "segments:\n" + "".join(
    f"  - name: {name}\n    description: {text}\n    owner: growth\n    refresh: realtime\n"
    f'    rule: "{rule}"\n'
    for name, text, rule in (
        ("behavior.rt_active_1h", "Three events in an hour.", "count(events within 1h) >= 3"),
        (
            "behavior.rt_cart_30min",
            "A cart in the last 30 minutes.",
            "did('added_to_cart' within 30min)",
        ),
        (
            "behavior.rt_abandoned_cart",
            "A cart and no order within 30 minutes.",
            "did('added_to_cart' within 1d) then not did('order_completed') within 30min",
        ),
        (
            "behavior.rt_browsing",
            "Five page views in 15 minutes.",
            "count(events where name = 'page_view' within 15min) >= 5",
        ),
        (
            "value.rt_big_order_today",
            "An order of 200 or more today.",
            "max(orders.amount within 1d) >= 200",
        ),
        ("value.rt_spend_7d", "300 or more in 7 days.", "sum(orders.amount within 7d) >= 300"),
        (
            "lifecycle.rt_first_week",
            "A first order this week.",
            "count(orders) = 1 and days_since(first(orders.ordered_at)) <= 7",
        ),
        (
            "risk.rt_carting_no_email",
            "Carting and not reachable by email.",
            "in_segment('behavior.rt_cart_30min') and not consent.email",
        ),
        (
            "behavior.rt_logins_today",
            "Two logins in a day.",
            "count(events where name = 'login' within 1d) >= 2",
        ),
        (
            "value.rt_vip_active",
            "Active now and a big spender this year.",
            "in_segment('behavior.rt_active_1h') and sum(orders.amount within 365d) >= 1000",
        ),
    )
)


def _peak_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else float("nan")


def _payloads(customers: int, batch: int, count: int = 400) -> list[bytes]:
    """Pre-built bodies (the producer's own cost stays out of the server's), each with
    carts; no instants, so the server stamps arrival."""
    rng = random.Random(7)
    out = []
    for _ in range(count):
        items = [
            {"customer_id": f"C{rng.randint(1, customers):07d}",
             "name": NAMES[0] if j % 4 == 0 else rng.choice(NAMES)}
            for j in range(batch)
        ]  # fmt: skip
        out.append(json.dumps(items).encode())
    return out


def _call(port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
          ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        con.request(method, path, body=body, headers=headers)
        resp = con.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=500_000)
    ap.add_argument("--workdir", type=Path, help="keep the generated shop here")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2500)
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="events/s offered in all (0: as fast as the server takes them)",
    )
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_realtime_"))
    pristine = work / f"realtime{args.customers}"
    if not (pristine / "segments" / "realtime.yml").exists():
        demo_shop(pristine, args.customers, AS_OF)
        (pristine / "segments" / "realtime.yml").write_text(SEGMENTS)
        subprocess.run([CRMSEG, "run", "-p", str(pristine)], check=True, capture_output=True)
    # every run from the same state: a copy, without what earlier runs streamed into it
    shop = work / "run"
    shutil.rmtree(shop, ignore_errors=True)
    shutil.copytree(pristine, shop)
    subprocess.run([CRMSEG, "run", "-p", str(shop)], check=True, capture_output=True)
    key = api_key(shop, "editor")
    port = free_port()
    server = subprocess.Popen(
        [CRMSEG, "serve", "-p", str(shop), "--port", str(port), "--no-schedule"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    try:
        deadline = time.monotonic() + 600
        while True:  # up, and its processor started (it reads the shop into memory first)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/events/status",
                                             headers=headers)  # fmt: skip
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if json.loads(resp.read())["running"]:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(server.communicate()[1].decode()[-3000:])
            time.sleep(0.5)
        _, _, body = _call(port, "GET", "/events/status", headers)
        cursor = json.loads(body)["last_change"]  # only what this run causes
        payloads = _payloads(args.customers, args.batch)
        sent: dict[int, float] = {}  # batch number -> when its request began
        seen: dict[int, float] = {}  # batch number -> when its first change arrived
        stamped: dict[int, float] = {}  # batch number -> the instant its evaluation began
        lock = threading.Lock()
        counts = {"batches": 0, "events": 0, "429": 0, "errors": 0}
        stop_at = time.monotonic() + args.seconds
        done = threading.Event()

        gap = args.producers * args.batch / args.rate if args.rate else 0.0

        def producer(seed: int) -> None:
            rng = random.Random(seed)
            con = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            due = time.monotonic() + gap * seed / args.producers  # spread the producers out
            while time.monotonic() < stop_at:
                if gap:  # a steady offered rate
                    time.sleep(max(0.0, due - time.monotonic()))
                    due += gap
                with lock:
                    if counts["batches"] >= MOST:
                        return
                    counts["batches"] += 1
                began = time.time()
                try:
                    con.request("POST", "/events", body=rng.choice(payloads), headers=headers)
                    resp = con.getresponse()
                    answer = resp.read()
                except (OSError, http.client.HTTPException):
                    with lock:
                        counts["errors"] += 1
                    con.close()
                    con = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    continue
                if resp.status == 429:
                    with lock:
                        counts["429"] += 1
                    time.sleep(float(resp.getheader("Retry-After") or 1))
                    continue
                if resp.status != 200:
                    with lock:
                        counts["errors"] += 1
                    continue
                number = json.loads(answer)["batch"]
                with lock:
                    sent[number] = began
                    counts["events"] += args.batch
            con.close()

        def consumer() -> None:
            nonlocal cursor
            while not done.is_set():
                status, _, body = _call(
                    port, "GET", f"/segments/{WATCHED}/changes?cursor={cursor}&wait=2&limit=10000",
                    headers,
                )  # fmt: skip
                now = time.time()
                if status != 200:
                    continue
                page = json.loads(body)
                cursor = page["next"]
                for change in page["changes"]:
                    found = re.match(r"batch(?:es)? (\d+)(?:-(\d+))?", change["cause"])
                    if not found:
                        continue
                    first = int(found.group(1))
                    last = int(found.group(2) or first)
                    began_at = datetime.fromisoformat(change["changed_at"]).replace(tzinfo=UTC)
                    with lock:
                        for n in range(first, last + 1):
                            seen.setdefault(n, now)
                            stamped.setdefault(n, began_at.timestamp())

        def applied() -> int:
            _, _, body = _call(port, "GET", "/events/status", headers)
            return int(json.loads(body)["applied"])

        watcher = threading.Thread(target=consumer)
        watcher.start()
        before = applied()
        began = time.monotonic()
        threads = [threading.Thread(target=producer, args=(i,)) for i in range(args.producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - began
        evaluated = applied() - before  # items through the whole path while producers ran
        settle = time.monotonic() + 30
        while time.monotonic() < settle and any(n not in seen for n in sent):
            time.sleep(0.2)  # the last batches' changes
        done.set()
        watcher.join()
        peak = _peak_mib(server.pid)
        latencies = [seen[n] - t for n, t in sent.items() if n in seen]
        # where the time went: until the evaluation of the batch began (server clock, same
        # machine), and from then until the consumer held the change
        waits = [stamped[n] - t for n, t in sent.items() if n in seen]
        after = [seen[n] - stamped[n] for n in sent if n in seen]
        rate = min(counts["events"], evaluated) / elapsed  # sustained: taken and evaluated
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        offered = f", {args.rate:,.0f} events/s offered" if args.rate else ", as fast as taken"
        print(
            f"== crmseg serve, real time, at {args.customers:,} customers: "
            f"{args.producers} producers x {args.batch:,}-event batches{offered}, "
            f"{elapsed:.0f} s"
        )
        print(
            f"events/s  {rate:10,.0f}  (target >= 50,000: {'ok' if rate >= 50_000 else 'MISSED'})"
        )
        print(
            f"latency   p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms  "
            f"over {len(latencies):,} of {len(sent):,} batches  "
            f"(target p99 <= 500 ms: {'ok' if p99 <= 0.5 else 'MISSED'})"
        )
        w50, w99, a50, a99 = (percentile(v, q) * 1000 for v in (waits, after) for q in (0.5, 0.99))
        print(f"          until evaluation began p50 {w50:.1f} ms, p99 {w99:.1f} ms; then "
              f"until delivered p50 {a50:.1f} ms, p99 {a99:.1f} ms")  # fmt: skip
        print(f"accepted  {counts['events'] / elapsed:10,.0f} events/s, evaluated "
              f"{evaluated / elapsed:,.0f}/s; refused {counts['429']:,} x 429, "
              f"{counts['errors']:,} errors")  # fmt: skip
        print(f"peak RSS  {peak:10,.0f} MiB  (target <= 2,048 MiB: "
              f"{'ok' if peak <= 2048 else 'MISSED'})")  # fmt: skip
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
