"""Fuzz the OpenAPI document with schemathesis against the real server: no 5xx answer, every answer matches the
schema (status code documented, content type, body shape), and a refused request (4xx) writes nothing. The
schema carries the name patterns and limits (namespace/queue names, task and user id lengths, ranges), so most
generated requests are valid ones that reach the store. The SSE stream never ends, so it is left out; the GS2
surface has its own SDK-driven suite."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conveyor import Conveyor
from conveyor.server import create_app
from tests.server.conftest import LiveServer, make_app, serve_in_thread

ADMIN = "fuzz-admin-token"


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'fuzz.db'}"
        app = make_app(url)
        api = create_app(app, admin_token=ADMIN, demo=True, print_admin_token=False)
        live = serve_in_thread(api, app)
        try:
            yield live
        finally:
            live.stop()


def _schema() -> Any:
    """The document as the server generates it (built once at collection; the live server serves the same)."""
    api = create_app(Conveyor("memory://fuzz-schema"), admin_token=ADMIN, demo=True, print_admin_token=False)
    schema = schemathesis.openapi.from_dict(api.openapi())
    return schema.exclude(path="/api/events").exclude(path_regex=r"^/(job-queue|identifier)")


OPERATIONS = [result.ok() for result in _schema().get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: str(op.label))
def test_openapi_fuzz(live_server: LiveServer, operation: Any) -> None:
    app = live_server.app

    def fingerprint() -> tuple[Any, ...]:
        s = app.stats()  # by status; not `scheduled`, which a clock tick changes
        counts = (s.pending, s.processing, s.completed, s.failed, s.cancelled)
        return (counts, sorted((ns.name, ns.revision) for ns in app.list_namespaces()))

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        before = fingerprint()
        response = case.call_and_validate(
            base_url=live_server.base_url,
            headers={"Authorization": f"Bearer {ADMIN}"},
            # A schema-valid request may still break a rule the schema cannot express (run_at with delay, an
            # unknown namespace): a named 4xx is the right answer there, not a failure.
            excluded_checks=[positive_data_acceptance],
        )
        if 400 <= response.status_code < 500:
            assert fingerprint() == before, f"a refused request wrote something: {response.text[:300]}"

    check()


def test_the_schema_carries_the_name_rules() -> None:
    schemas = _schema().raw_schema["components"]["schemas"]
    job = schemas["NewJobBody"]["properties"]
    namespace = job["namespace"]["anyOf"][0]
    assert namespace["pattern"] == "^[A-Za-z0-9\\-_.]{1,128}$"
    assert job["task"]["maxLength"] == 1024 and job["task"]["minLength"] == 1
    assert job["user_id"]["anyOf"][0]["maxLength"] == 1024
    assert job["priority"]["anyOf"][0]["maximum"] == 32767
    assert job["run_at"]["anyOf"][0]["format"] == "date-time"
