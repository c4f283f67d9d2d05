"""Body, header and read-time limits of a real `conveyor serve` process, driven over raw sockets: slow clients are
cut off (slowloris), a huge header is refused, a chunked body over the limit gets the same 413 as one announced
by Content-Length, and the server keeps serving everyone else meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.test_serve_process import ServeProcess

TOKEN = "limits-admin-token"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(
        f"sqlite:///{tmp_path / 'limits.db'}",
        "--no-worker",
        "--max-body-bytes",
        "4096",
        "--max-header-bytes",
        "8192",
        "--header-timeout",
        "2",
        "--request-timeout",
        "3",
        env={"CONVEYOR_ADMIN_TOKEN": TOKEN},
    )
    yield proc
    proc.stop()


def _connect(server: ServeProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def _read_all(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline passes)."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:  # closed with our unread bytes still queued: the kernel resets
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close the connection in time (got {data[:200]!r})")


def test_slow_clients_are_cut_off(server: ServeProcess) -> None:
    """20 connections sending their headers at one byte per second are all closed within the header timeout
    (2 s here) plus slack, with 408; meanwhile the server answers other clients at once."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    closed_after: list[float] = []
    answers: list[bytes] = []
    lock = threading.Lock()

    def slow_client() -> None:
        sock = _connect(server)
        started = time.monotonic()
        try:
            for byte in head:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break  # closed by the server
                sock.settimeout(1.0)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                with lock:
                    answers.append(chunk)
                break
            with lock:
                closed_after.append(time.monotonic() - started)
        finally:
            sock.close()

    threads = [threading.Thread(target=slow_client) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200  # others are still served
    for t in threads:
        t.join(timeout=60)
    assert len(closed_after) == 20
    assert max(closed_after) < 12, closed_after  # 2 s timeout; generous slack for a loaded machine
    assert min(closed_after) >= 1.5, closed_after  # not before the timeout
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers if a), answers


def test_slow_body_is_cut_off(server: ServeProcess) -> None:
    sock = _connect(server)
    try:
        sock.sendall(
            b"POST /api/jobs/enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        started = time.monotonic()
        _read_all(sock, time.monotonic() + 15)
        assert 2.5 <= time.monotonic() - started < 12
    finally:
        sock.close()
    assert (
        httpx.get(server.base_url + "/api/jobs/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()["total"]
        == 0
    )


def test_a_huge_header_is_refused(server: ServeProcess) -> None:
    sock = _connect(server)
    try:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before we finished sending it
        answer = _read_all(sock, time.monotonic() + 15)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    finally:
        sock.close()
    # a header just under the limit is fine
    assert httpx.get(server.base_url + "/health", headers={"X-Big": "a" * 4000}).status_code == 200


def test_chunked_body_over_the_limit_gets_413_like_content_length(server: ServeProcess) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    big = b'{"topic": "t", "payload": "' + b"x" * 8000 + b'"}'
    announced = httpx.post(server.base_url + "/api/jobs/enqueue", content=big, headers=headers)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    chunked = httpx.post(server.base_url + "/api/jobs/enqueue", content=chunks(), headers=headers)
    assert announced.status_code == chunked.status_code == 413
    assert announced.json()["error"] == chunked.json()["error"] == "payload_too_large"
    stats = httpx.get(server.base_url + "/api/jobs/stats", headers=headers).json()
    assert stats["total"] == 0  # nothing written by a refused request
    small = httpx.post(server.base_url + "/api/jobs/enqueue", json={"topic": "t"}, headers=headers)
    assert small.status_code == 200
