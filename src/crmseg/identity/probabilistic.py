"""Probabilistic matching with Splink (Fellegi-Sunter), the optional extra ``identity``.

Splink runs on an embedded DuckDB over the customer columns it compares (names, email, E.164
phone, city, birth date), whatever the warehouse backend is. m and u probabilities are
estimated without labels (u by random sampling, m by expectation maximisation within blocking
rules), so nothing is downloaded. Pairs at or above the threshold become extra links for the
connected components; the guard rails of deterministic matching apply to them too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from crmseg.config import IdentityConfig
from crmseg.errors import MissingDependencyError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from crmseg.identity.components import Scratch
    from crmseg.sources.normalize import PhoneBook

COMPARED = ("first_name", "last_name", "email", "phone", "city", "birth_date")


def _splink() -> Any:
    try:
        import splink
    except ImportError:
        raise MissingDependencyError("splink", "identity") from None
    return splink


def _prepared(customers: ir.Table, backend: Any, phones: PhoneBook) -> pa.Table:
    from crmseg.sources.normalize import email_key

    cols = [c for c in COMPARED if c in customers.columns]
    values: dict[str, Any] = {}
    for col in cols:
        value = customers[col]
        if col == "email":
            values[col] = email_key(value)
        elif col in ("first_name", "last_name", "city"):
            values[col] = value.strip().lower()
        else:
            values[col] = value
    if "country" in customers.columns and "phone" in cols:
        values["_country"] = customers.country
    data = backend.execute(
        customers.filter(customers.customer_id.notnull()).select("customer_id", **values)
    )
    if "phone" in cols:
        raw = data.column("phone").to_pylist()
        country = (
            data.column("_country").to_pylist()
            if "_country" in data.column_names
            else [None] * len(raw)
        )
        todo = [(p, c) for p, c in zip(raw, country, strict=True) if p]
        found = iter(phones.normalise(todo))
        e164 = [next(found)[0] if p else None for p in raw]
        data = data.set_column(
            data.column_names.index("phone"), "phone", pa.array(e164, pa.string())
        )
    if "_country" in data.column_names:
        data = data.drop_columns(["_country"])
    return data


def match_pairs(data: pa.Table, config: IdentityConfig) -> pa.Table:
    """(customer_id_l, customer_id_r, match_weight, match_probability) at or above threshold."""
    splink = _splink()
    import splink.comparison_library as cl
    from splink import Linker, SettingsCreator, block_on

    from crmseg.backends.local import splink_api

    cfg = config.splink
    cols = set(data.column_names)
    comparisons: list[Any] = []
    for col in ("first_name", "last_name"):
        if col in cols:
            comparisons.append(cl.NameComparison(col))
    if "email" in cols:
        comparisons.append(cl.EmailComparison("email"))
    for col in ("phone", "city"):
        if col in cols:
            comparisons.append(cl.ExactMatch(col))
    if "birth_date" in cols:
        comparisons.append(cl.DateOfBirthComparison("birth_date", input_is_string=False))
    rules: list[Any] = [block_on(*rule) for rule in cfg.blocking if set(rule) <= cols]
    empty = pa.table(
        {
            "customer_id_l": pa.array([], pa.string()),
            "customer_id_r": pa.array([], pa.string()),
            "match_weight": pa.array([], pa.float64()),
            "match_probability": pa.array([], pa.float64()),
        }
    )
    if not rules or len(comparisons) < 2 or data.num_rows < 2:
        return empty
    logging.getLogger("splink").setLevel(logging.WARNING)
    with splink_api() as api:
        settings = SettingsCreator(
            link_type="dedupe_only",
            unique_id_column_name="customer_id",
            comparisons=comparisons,
            blocking_rules_to_generate_predictions=rules,
        )
        linker = Linker(api.register(data), settings, log_level=logging.WARNING)
        training = linker.training
        contacts = [c for c in ("email", "phone") if c in cols]
        deterministic: list[Any] = [block_on(c) for c in contacts] or rules[:1]
        training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
        training.estimate_u_using_random_sampling(max_pairs=cfg.max_pairs, seed=cfg.seed)
        # EM cannot estimate a column it blocks on: train names on the contact blocks and
        # contacts on a name block.
        for rule in [*deterministic, rules[0]]:
            training.estimate_parameters_using_expectation_maximisation(rule)
        predictions: Any = linker.inference.predict(threshold_match_probability=cfg.threshold)
        table = predictions.as_pyarrow_table()
    del splink
    if table.num_rows == 0:
        return empty
    return pa.table(
        {
            "customer_id_l": pc.cast(table.column("customer_id_l"), pa.string()),
            "customer_id_r": pc.cast(table.column("customer_id_r"), pa.string()),
            "match_weight": pc.cast(table.column("match_weight"), pa.float64()),
            "match_probability": pc.cast(table.column("match_probability"), pa.float64()),
        }
    )


def splink_links(
    scratch: Scratch, customers: ir.Table, config: IdentityConfig, phones: PhoneBook
) -> tuple[ir.Table, ir.Table]:
    """Splink's pairs as links (customer_id, kind, value) and as a report table."""
    import ibis

    _splink()
    pairs = match_pairs(_prepared(customers, scratch.backend, phones), config)
    matches = scratch.put("splink_pairs", ibis.memtable(pairs))
    pair = matches.customer_id_l + "|" + matches.customer_id_r
    links = ibis.union(
        matches.select(customer_id=matches.customer_id_l, kind=ibis.literal("splink"), value=pair),
        matches.select(customer_id=matches.customer_id_r, kind=ibis.literal("splink"), value=pair),
    )
    return links, matches
