"""Connection-level defences uvicorn lacks: a header-read timeout, a header size cap, a cap on open connections
and a timeout on responses the client does not read.

uvicorn (0.55) has an idle keep-alive timeout (armed only after a response) and `limit_concurrency`
(a 503 once the request is parsed), but nothing bounds a connection that never finishes its headers,
how many headers bytes it sends, how many connections are open, or how long a response may sit unread
in the write buffer. GuardedProtocol adds these to uvicorn's httptools protocol through its documented
`http` setting (a protocol class), so the request path keeps uvicorn's speed: a few attribute writes per
request, and one sweep a few times a second over the open connections instead of a timer per request.
"""
from __future__ import annotations

from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime.serve.budget import CONNECTION
from runtime.serve.guard import SECURITY_HEADERS

MAX_HEADER_BYTES = 64 * 1024  # request line + headers: tritonclient and browsers send well under 2 KB


def _canned(status: str, message: str, *headers: bytes) -> bytes:
    """A whole response that closes the connection, written before (or instead of) parsing a request."""
    body = b'{"error": "%s"}' % message.encode()
    security = [f"{k}: {v}".encode() for k, v in SECURITY_HEADERS]
    return b"\r\n".join([b"HTTP/1.1 " + status.encode(), b"content-type: application/json", b"connection: close",
                          *security, *headers, b"content-length: %d" % len(body), b"", body])


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
    """uvicorn's httptools protocol, plus: per connection, when its current request head began (None once the
    head is complete), when it went idle (None while served) and since when its write buffer is stuck. One
    sweep per server checks them a few times a second: no timer per request."""

    limits = ConnectionLimits()
    _sweeping = False  # set on the class protocol_class made: one sweep per server

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        now = self.loop.time()
        self._head_since: float | None = now
        self._idle_since: float | None = now
        self._head_bytes = 0
        self._stalled: tuple[float, int] | None = None  # (since, bytes unsent then) while writing is paused
        self._drained: list = []  # callbacks for when the write buffer drains or the connection is lost
        cls = type(self)
        if not cls._sweeping:
            cls._sweeping = True
            _sweep(self.loop, self.connections, self.limits)
        if len(self.connections) > self.limits.max_connections and not _evict_one(self.connections, self):
            transport.write(_TOO_MANY)
            transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_since is not None and not self.transport.is_closing():  # the head is still incomplete
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._head_since = None
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self._run_drained()

    def call_when_drained(self, callback) -> bool:
        """Call `callback` once the write buffer drains (or the connection is lost): True, or False (and nothing
        kept) if it is not over its high-water mark now."""
        if not self.flow.write_paused:
            return False
        self._drained.append(callback)
        return True

    def _run_drained(self) -> None:
        callbacks, self._drained = self._drained, []
        for callback in callbacks:
            callback()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CONNECTION] = self
        if self._head_since is None:  # a keep-alive connection's next request
            self._head_since, self._head_bytes = self.loop.time(), 0

    def on_headers_complete(self) -> None:
        self._head_since = self._idle_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._stalled = (self.loop.time(), self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        self._stalled = None
        super().resume_writing()
        if self._drained:
            self._run_drained()

    @property
    def evictable_since(self) -> float | None:
        """When this connection went idle or began sending a head not yet complete; None while it is served."""
        return self._idle_since if self._stalled is None else None


def _sweep(loop, connections, limits: ConnectionLimits) -> None:
    """Drop connections whose head is overdue, or whose unsent bytes have not shrunk for send_timeout_s (a slow
    reader that keeps reading is left alone); then run again."""
    now = loop.time()
    for c in list(connections):
        head, stalled = getattr(c, "_head_since", None), getattr(c, "_stalled", None)
        if head is not None and now - head > limits.header_timeout_s:
            c._head_since = None
            c.transport.abort()
        elif stalled is not None and now - stalled[0] > limits.send_timeout_s:
            unsent = c.transport.get_write_buffer_size()
            if unsent < stalled[1]:
                c._stalled = (now, unsent)
            else:
                c._stalled = None
                c.transport.abort()  # close() would wait for the unread bytes; connection_lost releases the sender
    interval = min(1.0, max(0.05, min(limits.header_timeout_s, limits.send_timeout_s) / 4))
    loop.call_later(interval, _sweep, loop, connections, limits)


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
