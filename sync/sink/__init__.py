"""`punchgate sink`: the reference central consumer of the punch stream (docs/sink.md).

It lives beside the contract it consumes (punchgate.sync.contract) and imports nothing from
the gateway or the drivers. `punchgate sink run` subscribes to every gateway's punches, events,
states and digests through an MQTT 5 shared subscription, validates each payload against the
consumer schemas, writes it to its database (SQLite by default, PostgreSQL in production) in
batched transactions, and only then acknowledges the messages and confirms the punches to the
gateways that sent them. `punchgate sink check` compares the gateways' digests with its tables.
"""
