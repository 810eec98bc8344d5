"""Identity resolution on the demo shop: precision/recall against the planted duplicates and
timings (phone normalisation, components, golden profile), deterministic and with Splink.

    .venv/bin/python benchmarks/bench_identity.py 100000 [--splink]
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime

import ibis

from crmseg.backends.duckdb import DuckDBBackend
from crmseg.config import IdentityConfig
from crmseg.demo.generator import generate
from crmseg.identity.normalize import PhoneBook
from crmseg.identity.report import pairwise_scores
from crmseg.identity.resolve import resolve

log = logging.getLogger("bench_identity")


def main(n: int, splink: bool) -> None:
    clock = time.perf_counter()
    data = generate(n, 42, datetime(2026, 11, 1))
    log.warning("generated %s customers in %.1fs", f"{n:,}", time.perf_counter() - clock)
    backend = DuckDBBackend()
    tables = {k: ibis.memtable(data[k]) for k in ("customers", "identifiers")}
    cfg = IdentityConfig.model_validate({"splink": {"enabled": splink}})
    phones = PhoneBook(cfg.default_region)
    extra = None
    if splink:
        from crmseg.identity.probabilistic import splink_links

        def extra(scratch, customers):  # type: ignore[no-untyped-def]
            return splink_links(scratch, customers, cfg, phones)

    clock = time.perf_counter()
    res = resolve(backend, cfg, tables, phones, extra)
    idmap = backend.execute(res.tables["identity_map"])
    golden = backend.execute(res.tables["golden_customers"].count().name("n").as_table())
    total = time.perf_counter() - clock
    scores = pairwise_scores(idmap, data["truth_people"])
    log.warning(
        "%s: %s records -> %s people in %.1fs (%s; %d rounds)",
        "deterministic + splink" if splink else "deterministic",
        f"{n:,}",
        f"{golden.column(0)[0].as_py():,}",
        total,
        ", ".join(f"{k} {v:.1f}s" for k, v in res.timings.items()),
        res.rounds,
    )
    log.warning(
        "pairs: predicted %d, true %d, correct %d -> precision %.4f, recall %.4f",
        scores["predicted_pairs"],
        scores["true_pairs"],
        scores["true_positive_pairs"],
        scores["precision"],
        scores["recall"],
    )
    res.close()
    backend.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, "--splink" in sys.argv)
