"""A real `conveyor serve` process behind the UI: closing tabs (each holding the live event stream) must leave no
"Task was destroyed but it is pending!" in the server's log.

It used to: the event route's generator (`conveyor/server/notify.py`) cancelled its shutdown waiter when the
client went away but not the `sub.get()` task it was waiting on, which was then garbage-collected pending. The
generator now cancels and awaits both (docs/ui-api-needs.md, "Closing a tab")."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.ui.conftest import Problems, new_page

TOKEN = "ui-log-test-admin-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_closing_tabs_leaves_no_pending_task_in_the_server_log(
    browser: Browser, problems: Problems, tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "CONVEYOR_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    conveyor = Path(sys.executable).with_name("conveyor")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(conveyor), "--store", f"sqlite:///{tmp_path / 'ui.db'}", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        context, _ = new_page(browser, problems)
        for _ in range(3):
            page = context.new_page()
            page.goto(f"{base}/ui/")
            page.fill("#token-input", TOKEN)
            page.click("#login-form button[type=submit]")
            expect(page.locator("#live-text")).to_have_text("live")
            page.close()  # the tab goes, its event stream with it
        context.close()
        # The abandoned task is reported when the garbage collector frees it: give the server work (allocations
        # run the collector) and a few seconds.
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "Task was destroyed" not in log.read_text():
                client.post("/api/v1/jobs/batch", json=[{"task": "noop", "delay": 3600}] * 200).raise_for_status()
                client.get("/api/v1/jobs", params={"limit": 200}).raise_for_status()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Application shutdown complete" in text, text
    assert "Task was destroyed but it is pending" not in text, text
