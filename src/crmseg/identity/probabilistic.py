"""Probabilistic matching with Splink (Fellegi-Sunter), the optional extra ``identity``.

The customer columns it compares (names, email, E.164 phone, city, birth date) are prepared in
the warehouse; Splink then runs on an embedded DuckDB over them pulled out (``engine: local``,
the same links whatever the warehouse), or on the warehouse's own engine through its Splink
API (``engine: warehouse``, PySpark: only the matched pairs leave the cluster). m and u
probabilities are estimated without labels (u by random sampling, m by expectation
maximisation within blocking rules), so nothing is downloaded. Pairs at or above the
threshold become extra links for the connected components; the guard rails of deterministic
matching apply to them too.
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


def _prepared(scratch: Scratch, customers: ir.Table, phones: PhoneBook) -> ir.Table:
    """The compared columns, normalised in the engine; phones as E.164 from the lookup the
    deterministic pass uses (normalised in Python once per distinct phone)."""
    import ibis

    from crmseg.identity.resolve import phone_lookup, with_e164
    from crmseg.sources.normalize import email_key

    cols = [c for c in COMPARED if c in customers.columns]
    rows = customers.filter(customers.customer_id.notnull())
    lookup = phone_lookup(scratch, rows, phones, "splink_phones") if "phone" in cols else None
    if lookup is not None:
        rows = with_e164(rows, lookup)
    values: dict[str, Any] = {}
    for col in cols:
        value = rows[col]
        if col == "email":
            values[col] = email_key(value)
        elif col in ("first_name", "last_name", "city"):
            values[col] = value.strip().lower()
        elif col == "phone":
            values[col] = rows.e164 if lookup is not None else ibis.null("string")
        else:
            values[col] = value
    return rows.select("customer_id", **values)


def _empty() -> pa.Table:
    return pa.table(
        {
            "customer_id_l": pa.array([], pa.string()),
            "customer_id_r": pa.array([], pa.string()),
            "match_weight": pa.array([], pa.float64()),
            "match_probability": pa.array([], pa.float64()),
        }
    )


def match_pairs(api: Any, data: Any, columns: list[str], config: IdentityConfig) -> pa.Table:
    """(customer_id_l, customer_id_r, match_weight, match_probability) at or above threshold:
    Splink's model trained and applied by ``api`` on ``data`` (an input it can register with
    the prepared ``columns``)."""
    _splink()
    import splink.comparison_library as cl
    from splink import Linker, SettingsCreator, block_on

    cfg = config.splink
    cols = set(columns)
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
    if not rules or len(comparisons) < 2:
        return _empty()
    logging.getLogger("splink").setLevel(logging.WARNING)
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
    # u from every sampled pair in one query: stopping early by chunk would make u depend on
    # the chunk order, and each chunk is a job of its own on Spark
    training.estimate_u_using_random_sampling(max_pairs=cfg.max_pairs, seed=cfg.seed, num_chunks=1)
    # EM cannot estimate a column it blocks on: train names on the contact blocks and
    # contacts on a name block. No comparison uses term frequencies, so EM iterates over
    # the counts of each comparison vector, not over every pair: the same estimates.
    for rule in [*deterministic, rules[0]]:
        training.estimate_parameters_using_expectation_maximisation(
            rule, estimate_without_term_frequencies=True
        )
    predictions: Any = linker.inference.predict(threshold_match_probability=cfg.threshold)
    table = predictions.as_pyarrow_table()
    if table.num_rows == 0:
        return _empty()
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

    from crmseg.backends.local import splink_api

    _splink()
    prepared = _prepared(scratch, customers, phones)
    columns = [c for c in prepared.columns if c != "customer_id"]
    if config.splink.engine == "warehouse":
        table = scratch.put("splink_input", prepared)
        rows = scratch.backend.execute(table.count().as_table()).column(0)[0].as_py()
        if rows < 2:
            pairs = _empty()
        else:
            with scratch.backend.splink(table) as (api, data):
                pairs = match_pairs(api, data, columns, config)
    else:
        data = scratch.backend.execute(prepared)
        if data.num_rows < 2:
            pairs = _empty()
        else:
            with splink_api() as api:
                pairs = match_pairs(api, data, columns, config)
    matches = scratch.put("splink_pairs", ibis.memtable(pairs))
    pair = matches.customer_id_l + "|" + matches.customer_id_r
    links = ibis.union(
        matches.select(customer_id=matches.customer_id_l, kind=ibis.literal("splink"), value=pair),
        matches.select(customer_id=matches.customer_id_r, kind=ibis.literal("splink"), value=pair),
    )
    return links, matches
