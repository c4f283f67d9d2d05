"""queries.py filled in for one store: the schema, the NOTIFY channel and the column lists put into every statement
once, when the store is built (queries.py stays plain SQL text)."""

from __future__ import annotations

import hashlib

from conveyor.store.postgres import queries as sqlq

__all__ = ["Queries", "events_channel"]


def events_channel(schema: str) -> str:
    """The NOTIFY channel of a schema's events (store/postgres/events.py): at most 63 bytes, a hash of the schema
    name when the name itself would not fit, so two long schema names never share a channel."""
    name = f"conveyor_events_{schema}"
    if len(name.encode()) <= 63:
        return name
    return "conveyor_events_" + hashlib.sha256(schema.encode()).hexdigest()[:40]


class Queries:
    """queries.py with the schema, channel and column lists filled in (once per store)."""

    def __init__(self, schema: str, channel: str) -> None:
        self.schema = f'"{schema}"'
        values = {
            "schema": self.schema,
            "job_columns": ", ".join(sqlq.JOB_COLUMNS),
            "j_job_columns": ", ".join(f"j.{c}" for c in sqlq.JOB_COLUMNS),
            "channel": "'" + channel.replace("'", "''") + "'",
            "events_channel": "'" + events_channel(schema).replace("'", "''") + "'",
        }

        def fill(text: str) -> str:
            for key, value in values.items():
                text = text.replace("{" + key + "}", value)
            return text

        for name in dir(sqlq):
            value = getattr(sqlq, name)
            if name.isupper() and isinstance(value, str):
                setattr(self, name, fill(value))

    def __getattr__(self, name: str) -> str:  # for mypy: every query is a str attribute
        raise AttributeError(name)
