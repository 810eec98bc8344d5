"""Real time: events in, entered/exited out, from the same rules as batch runs.

* :mod:`~crmseg.stream.ingest` checks a batch of JSON items (events, orders, consent changes)
  and names every bad one by index and field;
* :mod:`~crmseg.stream.store` makes a checked batch durable in the warehouse (the ``stream_*``
  tables, read by batch runs as part of the canonical tables) before it is acknowledged;
* :mod:`~crmseg.stream.realtime` compiles the ``refresh: realtime`` segments once: their
  membership for the people a batch touched, the parts of each rule (the reasons of a change)
  and the next instant at which time alone can change someone's membership;
* :mod:`~crmseg.stream.processor` keeps the current members, applies batches and sweeps, and
  writes every entry and exit, with its reason, to the membership history and the outbox.
"""
