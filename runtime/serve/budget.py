"""The in-flight bytes budget: what requests being read, run and answered may hold in memory, all together.

An infer request takes its body's bytes as they arrive, then, once parsed, what its input batch, outputs and
response will need; everything is given back when the response has been handed to the client's socket
(or the client is gone). Past the budget a request is refused at once with 503 and Retry-After, so that
a flood of large requests, or of clients that never read, cannot take the server's memory.
Single-threaded: only the event loop calls it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import time

from starlette.responses import Response

# After a flood, glibc keeps the freed buffers (its mmap threshold grows with them): once nothing is in flight
# after more than this much was, malloc_trim hands the pages back (measured: 122 MB RSS after the 100 clients
# that never read without it, from 81 MB before them; benchmarks/results/serve_hostile.md).
TRIM_AFTER_BYTES = 32 << 20
CONNECTION = "featuremaps.connection"  # the scope key of the connection (runtime/serve/connections.py)


class OverBudget(Exception):
    """More bytes than the budget has left (503, retry) or than it has at all (413)."""

    def __init__(self, wanted: int, left: int, total: int):
        super().__init__(wanted, left, total)
        self.wanted, self.left, self.total = wanted, left, total

    @property
    def ever(self) -> bool:
        """Whether the request could be served by an idle server."""
        return self.wanted <= self.total


class Budget:
    def __init__(self, total: int):
        self.total, self.used, self.peak = total, 0, 0
        self._since_trim = 0  # most bytes in flight since the last trim
        self._trimmed_at = 0.0

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """One request's share of a Budget; release() is idempotent."""

    __slots__ = ("budget", "bytes")

    def __init__(self, budget: Budget):
        self.budget, self.bytes = budget, 0

    def take(self, n: int) -> None:
        """Raises OverBudget, taking nothing, if n more bytes do not fit."""
        b = self.budget
        if b.used + n > b.total:
            raise OverBudget(self.bytes + n, b.total - b.used, b.total)
        b.used += n
        self.bytes += n
        if b.used > b._since_trim:
            b._since_trim = b.used
            b.peak = max(b.peak, b.used)

    def release(self) -> None:
        b = self.budget
        b.used -= self.bytes
        self.bytes = 0
        if b.used == 0 and b._since_trim > TRIM_AFTER_BYTES and time.monotonic() - b._trimmed_at > 1:
            b._since_trim = 0
            _trim()  # about a millisecond, at most once a second
            b._trimmed_at = time.monotonic()


def _trim() -> None:
    """Give freed heap pages back to the system (glibc's malloc_trim; nothing elsewhere)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


class HeldResponse(Response):
    """A Response that releases its Hold once its bytes have left the process for the client's socket, or the client
    is gone: at once when the socket took them, else when the connection's write buffer drains or the connection
    is lost (runtime/serve/connections.py, through scope[CONNECTION]; it drops a client that never reads). A
    callback, not an awaited drain: an answered request costs no extra wake-up of its task."""

    def __init__(self, content: bytes, headers: dict, hold: Hold):
        super().__init__(content, headers=headers)
        self.hold = hold

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except BaseException:
            self.hold.release()
            raise
        connection = scope.get(CONNECTION)
        if connection is None or not connection.call_when_drained(self.hold.release):
            self.hold.release()
