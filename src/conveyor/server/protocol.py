"""Connection limits that uvicorn does not enforce: the size of a request's head and how long reading it may take.

uvicorn's httptools protocol buffers a request line and headers of any size for as long as the client likes to
send them, and waits for a body forever; 20 clients sending one byte a second hold 20 connections open for good
(slowloris), and a 1 MiB header is read into memory. `guarded_protocol(limits)` returns uvicorn's own protocol
class with three limits added, so everything else (keep-alive, pipelining, flow control) stays uvicorn's:

* `max_header_bytes` — request line plus headers; over it the answer is 431 and the connection is closed, checked
  while the head arrives (memory stays bounded by the limit plus one socket read);
* `header_timeout` — seconds from the first byte of a request to the end of its headers; then 408 and close;
* `request_timeout` — seconds from the end of the headers to the end of the body; then the connection is closed
  (the application sees a disconnect and answers nothing).

Bodies are limited by size in `RequestGuard` (factory.py); responses (SSE streams included) are not timed here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """`conveyor serve --max-header-bytes/--header-timeout/--request-timeout` (see the module doc)."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was already answered."""


def _plain(status: bytes, text: str) -> bytes:
    body = text.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `limits` (a class attribute set by guarded_protocol)."""

    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None

    # ---- timers ----------------------------------------------------------------------------------------------

    def _arm(self, seconds: float, in_head: bool) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, in_head)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, in_head: bool) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if in_head:
            self._refuse(b"408 Request Timeout", "the request's headers did not arrive in time")
        else:  # the application is reading the body: it sees a disconnect
            self._refused = True
            self.transport.close()

    def _refuse(self, status: bytes, text: str) -> None:
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_plain(status, text))
            self.transport.close()

    # ---- uvicorn's protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True
        self._head_bytes = 0
        self._arm(self.limits.header_timeout, in_head=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head and not self._refused:
            # Still in the head after this read: all of it was head (a read that also ended the head is checked by
            # on_headers_complete, exactly).
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large", self._too_large_text())

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # not after our own answer (a parser error raised by _Refused)
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection: its head is timed too
            self._in_head = True
            self._head_bytes = 0
            self._arm(self.limits.header_timeout, in_head=True)

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse(b"431 Request Header Fields Too Large", self._too_large_text())
            raise _Refused()
        self._in_head = False
        self._arm(self.limits.request_timeout, in_head=False)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _too_large_text(self) -> str:
        return f"the request line and headers exceed {self.limits.max_header_bytes} bytes"


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` that enforces `limits`."""
    return type("ConveyorHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
