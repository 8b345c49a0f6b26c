"""The request-level defences around the app, as one plain ASGI layer: which Host and Origin may talk to the
server, and no traceback ever (one rate-limited log line instead); and the protective headers of every response.

- Host: a browser sends the name it resolved, so a page on `rebind.evil.example` that re-resolves to
  127.0.0.1 (DNS rebinding) still sends `Host: rebind.evil.example`: any Host not allowed gets 421.
- Origin: a browser names the page that sent a request; a POST (infer, repository index) from a page
  not served here gets 403. Clients that are not browsers (tritonclient, curl) send no Origin.
- Headers: a Content-Security-Policy without inline script or style and with frame-ancestors 'none' (which
  replaces X-Frame-Options), nosniff and no Referer, on the page and the API alike. uvicorn adds them to
  every response, as it adds its date header (its `headers` setting): cheaper than wrapping each ASGI send.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

LOG = logging.getLogger("runtime.serve")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
]
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")


def allowed_hosts(bound: str, port: int, extra: Iterable[str] = ()) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """(Host values allowed as they are, names allowed with any port or none): the bound address, localhost,
    127.0.0.1 and [::1] with the port (also bare on port 80), and each extra name ('*': any Host)."""
    bound = f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound
    exact = set()
    for name in {bound, *LOCAL_NAMES}:
        exact.add(f"{name}:{port}".lower().encode())
        if port == 80:
            exact.add(name.lower().encode())
    names = set()
    for name in extra:
        name = name.strip().lower()
        (exact if _has_port(name) else names).add(name.encode())
    return frozenset(exact), frozenset(names)


def _has_port(name: str) -> bool:
    return name.rpartition(":")[2].isdigit() and (not name.startswith("[") or "]:" in name)


def _host_name(host: bytes) -> bytes:
    """The Host value without its port ('[::1]:80' -> '[::1]', 'a:80' -> 'a')."""
    head, colon, tail = host.rpartition(b":")
    if colon and tail.isdigit() and (not host.startswith(b"[") or head.endswith(b"]")):
        return head
    return host


class Guard:
    """ASGI middleware: refuse foreign Hosts (421) and cross-site state changes (403), and turn any exception the
    app lets out (after Starlette has answered 500) into one rate-limited log line."""

    def __init__(self, app, hosts: tuple[frozenset[bytes], frozenset[bytes]], origins: Iterable[str] = ()):
        self.app = app
        self.exact, self.names = hosts
        self.any_host = b"*" in self.names
        self.origins = frozenset(o.strip().lower().rstrip("/").encode() for o in origins)
        self.any_origin = b"*" in self.origins
        self.limiter = RateLimitedLog(LOG)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = origin = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.lower()
            elif key == b"origin":
                origin = value.lower()
        refusal = self._refusal(scope, host, origin)
        if refusal is not None:
            return await _send_error(send, *refusal)
        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the last line of defence: no traceback ever reaches the log
            self.limiter.log(f"{scope['method']} {scope['path']}: internal error: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}")

    def _refusal(self, scope, host: bytes | None, origin: bytes | None) -> tuple[int, str] | None:
        if host is None:
            return 400, "the request has no Host header"
        if not (self.any_host or host in self.exact or _host_name(host) in self.names):
            return 421, (f"Host {host.decode('latin-1')[:100]!r} is not a name of this server "
                         "(add it to the server's `allow_hosts` if a proxy or a DNS name points here)")
        if origin is not None and scope["method"] not in SAFE_METHODS and not self.any_origin:
            own = origin.partition(b"://")[2] == host and origin.startswith((b"http://", b"https://"))
            if not own and origin not in self.origins:
                return 403, (f"cross-origin {scope['method']} from {origin.decode('latin-1')[:100]!r} refused "
                             "(add the page's origin to the server's `allow_origins` to allow it)")
        return None


async def _send_error(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RateLimitedLog:
    """At most `lines` log lines per `period_s`; the next line after a quiet spell says how many were dropped."""

    def __init__(self, logger: logging.Logger, lines: int = 10, period_s: float = 10.0):
        self.logger, self.lines, self.period_s = logger, lines, period_s
        self.window_start, self.count, self.dropped = 0.0, 0, 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.window_start >= self.period_s:
            self.window_start, self.count = now, 0
        self.count += 1
        if self.count > self.lines:
            self.dropped += 1
            return False
        return True

    def log(self, line: str, level: int = logging.WARNING) -> None:
        if self.allow():
            if self.dropped:
                line, self.dropped = f"{line} ({self.dropped} similar lines dropped)", 0
            self.logger.log(level, line)


class RateLimitFilter(logging.Filter):
    """A logging filter with RateLimitedLog's budget, for uvicorn's own error log (one line per bad request line);
    a record's traceback is cut to its last line."""

    def __init__(self, lines: int = 10, period_s: float = 10.0):
        super().__init__()
        self.limiter = RateLimitedLog(LOG, lines, period_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.limiter.allow():
            return False
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True
