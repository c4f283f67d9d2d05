"""queries.py filled in for one store: the schema, the NOTIFY channel and the column lists put into every statement
once, when the store is built (queries.py stays plain SQL text)."""

from __future__ import annotations

from conveyor.store.postgres import queries as sqlq

__all__ = ["Queries"]


class Queries:
    """queries.py with the schema, channel and column lists filled in (once per store)."""

    def __init__(self, schema: str, channel: str) -> None:
        self.schema = f'"{schema}"'
        values = {
            "schema": self.schema,
            "job_columns": ", ".join(sqlq.JOB_COLUMNS),
            "j_job_columns": ", ".join(f"j.{c}" for c in sqlq.JOB_COLUMNS),
            "channel": "'" + channel.replace("'", "''") + "'",
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
