"""Connection-level defences uvicorn lacks: a header-read timeout, a header size cap, a cap on open connections
and a timeout on responses the client does not read.

uvicorn (0.55) has an idle keep-alive timeout (armed only after a response) and `limit_concurrency`
(a 503 once the request is parsed), but nothing bounds a connection that never finishes its headers,
how many headers bytes it sends, how many connections are open, or how long a response may sit unread
in the write buffer. GuardedProtocol adds these to uvicorn's httptools protocol through its documented
`http` setting (a protocol class), so the request path keeps uvicorn's speed: the checks run once per
connection or per request head, never per body byte.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # request line + headers: tritonclient and browsers send well under 2 KB


def _canned(status: str, message: str, *headers: bytes) -> bytes:
    """A whole response that closes the connection, written before (or instead of) parsing a request."""
    body = b'{"error": "%s"}' % message.encode()
    return b"\r\n".join([b"HTTP/1.1 " + status.encode(), b"content-type: application/json", b"connection: close",
                          *headers, b"content-length: %d" % len(body), b"", body])


_TOO_MANY = _canned("503 Service Unavailable", "too many open connections; retry", b"retry-after: 1")
_HEADERS_TOO_LARGE = _canned("431 Request Header Fields Too Large",
                             f"request line and headers over {MAX_HEADER_BYTES} bytes")


@dataclass(frozen=True)
class ConnectionLimits:
    """header_timeout_s: a request's line and headers must arrive within this time of its first byte (or of the
    connection); max_connections: open connections beyond it evict the oldest one that is idle or still sending
    its head, else are refused (503); send_timeout_s: a response whose unsent bytes do not shrink for this long is
    dropped (the client does not read)."""

    header_timeout_s: float = 5.0
    max_connections: int = 512
    send_timeout_s: float = 10.0


def protocol_class(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """GuardedProtocol bound to `limits` (uvicorn builds one protocol object per connection from the class)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


class GuardedProtocol(HttpToolsProtocol):
    limits = ConnectionLimits()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._idle_since: float | None = time.monotonic()  # None while a request is being served
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        self._send_timer = None
        if len(self.connections) > self.limits.max_connections and not _evict_one(self.connections, self):
            transport.write(_TOO_MANY)
            transport.close()

    def connection_lost(self, exc) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and not self.transport.is_closing():  # the head is still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._cancel_timers()
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a keep-alive connection's next request
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._idle_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        super().on_response_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout_s, self._send_check,
                                                    self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def _send_check(self, unsent: int) -> None:
        """The write buffer stayed above its high-water mark for send_timeout_s: drop the connection unless it shrank
        (a slow reader that keeps reading is left alone)."""
        now = self.transport.get_write_buffer_size()
        if now < unsent:
            self._send_timer = self.loop.call_later(self.limits.send_timeout_s, self._send_check, now)
        else:
            self._send_timer = None
            self.transport.abort()  # close() would wait for the unread bytes; connection_lost releases the sender

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.transport.abort()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._send_timer = None

    @property
    def evictable_since(self) -> float | None:
        """When this connection went idle or began sending a head not yet complete; None while it is served."""
        return self._idle_since if self._send_timer is None else None


def _evict_one(connections, newcomer) -> bool:
    """Abort the open connection idle (or stuck in its head) for longest, to make room for a newcomer."""
    candidates = [(c.evictable_since, id(c), c) for c in connections
                  if c is not newcomer and getattr(c, "evictable_since", None) is not None]
    if not candidates:
        return False
    oldest = min(candidates)[2]
    oldest._idle_since = None  # not chosen again before its connection_lost
    oldest.transport.abort()
    return True
