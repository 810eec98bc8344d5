"""Splink on demo data (optional extra): it keeps what deterministic matching found."""

from __future__ import annotations

from datetime import datetime

import ibis
import pytest

from crmseg.backends.duckdb import DuckDBBackend
from crmseg.config import IdentityConfig
from crmseg.demo.generator import generate
from crmseg.identity.normalize import PhoneBook
from crmseg.identity.report import pairwise_scores
from crmseg.identity.resolve import resolve

pytest.importorskip("splink")


@pytest.mark.slow
def test_splink_adds_links_with_match_weights() -> None:
    from crmseg.identity.probabilistic import splink_links

    data = generate(5000, 5, datetime(2026, 11, 1))
    cfg = IdentityConfig.model_validate({"splink": {"enabled": True}})
    phones = PhoneBook("DE")
    backend = DuckDBBackend()
    try:
        res = resolve(
            backend,
            cfg,
            {k: ibis.memtable(data[k]) for k in ("customers", "identifiers")},
            phones,
            lambda scratch, customers: splink_links(scratch, customers, cfg, phones),
        )
        idmap = backend.execute(res.tables["identity_map"])
        matches = backend.execute(res.tables["identity_matches"])
        res.close()
    finally:
        backend.close()
    scores = pairwise_scores(idmap, data["truth_people"])
    # Demo names and birth dates repeat, so Splink adds some false pairs (see docs/identity.md).
    assert scores["recall"] >= 0.95 and scores["precision"] >= 0.85
    assert matches.num_rows > 0
    assert min(matches.column("match_probability").to_pylist()) >= cfg.splink.threshold
