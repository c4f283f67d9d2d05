"""Fuzz the GS2 part of the served OpenAPI document (`/job-queue/...`, `/identifier/...`) with schemathesis
against the real server (`create_app`): no 5xx answer, and every answer matches the schema (documented status,
content type, body shape). The rest of the document is fuzzed by test_openapi_fuzz.py."""

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

ADMIN = "gs2-fuzz-admin-token"


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'gs2-fuzz.db'}"
        app = make_app(url)
        api = create_app(app, admin_token=ADMIN, print_admin_token=False)
        live = serve_in_thread(api, app)
        try:
            yield live
        finally:
            live.stop()


def _schema() -> Any:
    api = create_app(Conveyor("memory://gs2-fuzz-schema"), admin_token=ADMIN, print_admin_token=False)
    schema = schemathesis.openapi.from_dict(api.openapi())
    return schema.include(path_regex=r"^/(job-queue|identifier)/")


OPERATIONS = [result.ok() for result in _schema().get_all_operations()]


def test_every_gs2_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) >= 20


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: str(op.label))
def test_gs2_openapi_fuzz(live_server: LiveServer, operation: Any) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=live_server.base_url,
            headers={"Authorization": f"Bearer {ADMIN}"},
            # A schema-valid request may still name a namespace, user or job that does not exist: GS2's 404
            # (or 400 for a rule the schema cannot express) is the right answer there, not a failure.
            excluded_checks=[positive_data_acceptance],
        )

    check()
