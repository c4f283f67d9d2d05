"""pytest plugin: the `conveyor_queue` fixture (registered under the `pytest11` entry point `conveyor`).

    def test_signup_sends_mail(conveyor_queue):
        signup("a@b")                                  # your code calls app.enqueue("send_email", …)
        conveyor_queue.assert_queued("send_email", 1)
        conveyor_queue.assert_contains("send_email", {"to": "a@b"})
        conveyor_queue.drain()                         # run it now

If your tests define a `conveyor_app` fixture returning your application's `Conveyor`, the fixture points that app
at a fresh in-memory store for the test (its tasks and cron entries stay) and restores it afterwards; otherwise it
is a fresh `TestConveyor` on which you register tasks yourself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor.testing import QueueHelpers, TestConveyor, test_queue


@pytest.fixture
def conveyor_queue(request: pytest.FixtureRequest) -> Iterator[QueueHelpers]:
    """An in-memory test queue with assertions (empty, queued, contains…) and drain()."""
    try:
        app = request.getfixturevalue("conveyor_app")
    except pytest.FixtureLookupError:
        app = None
    if app is None:
        fresh = TestConveyor()
        try:
            yield fresh
        finally:
            fresh.close()
        return
    queue = test_queue(app)
    try:
        yield queue
    finally:
        queue.close()
