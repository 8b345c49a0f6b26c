"""Serve artifacts over the Open Inference Protocol v2 with uvicorn: the options, the listening socket and the
server's lifecycle (`python -m runtime serve` is its command line: runtime/cli/serve.py).

Binds 127.0.0.1 by default. SIGINT and SIGTERM stop accepting connections, finish the requests
in flight, stop the batching worker and close the model.

Safe by default on a hostile network (README, "Threat model"): only its own Host names and Origin
(runtime/serve/guard.py), bounded connections (runtime/serve/connections.py) and bounded memory
(runtime/serve/budget.py). TLS and authentication belong in a gateway in front of it.
"""
from __future__ import annotations

import gc
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from runtime.api import load
from runtime.artifacts.manifest import Manifest
from runtime.artifacts.paths import safe_name
from runtime.errors import ArtifactError, UsageError

GRACEFUL_SHUTDOWN_S = 30  # how long in-flight requests may take to finish after SIGINT/SIGTERM


@dataclass(frozen=True)
class ServeOptions:
    """How `serve` runs the model: where it listens, on what, and how it batches.

    Raises:
        UsageError: max_batch < 1, max_delay_ms < 0, port outside 0..65535, a timeout, size or count not > 0.
    """

    host: str = "127.0.0.1"  # this machine only
    port: int = 8000  # 0 picks a free one
    name: str | None = None  # the model's name in the URLs; None: its name in the manifest
    backend: str = "onnx"
    device: str = "cpu"
    max_batch: int = 64  # most images run together, and most per request
    max_delay_ms: float = 0.0  # how long a batch that is not full waits for more requests
    threads: int | None = None  # the backend's intra-op threads; None: 1 for onnx (see serve), else its default
    body_timeout_s: float = 30.0  # a request body must arrive within this time, else 408
    # Who may talk to it: Host names beyond the bound address, localhost, 127.0.0.1 and [::1] (a proxy's
    # or a Kubernetes service's name; '*': any), and origins of pages allowed to POST ('*': any).
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    header_timeout_s: float = 5.0  # a request line and headers must arrive within this time, else dropped
    keepalive_timeout_s: float = 5.0  # an idle keep-alive connection is closed after this time
    send_timeout_s: float = 10.0  # a response the client does not read for this long is dropped
    max_connections: int = 512  # open connections (also kept under the process's file descriptor limit)
    budget_mb: float = 256.0  # bytes of requests and responses in flight, all together, else 503
    max_json_mb: float = 16.0  # largest JSON response; larger ones are refused, naming binary outputs

    def __post_init__(self):
        if self.max_batch < 1 or self.max_delay_ms < 0 or not 0 <= self.port <= 65535 or not self.body_timeout_s > 0:
            raise UsageError(f"expected `max_batch` >= 1, `max_delay_ms` >= 0, `port` 0..65535 and "
                             f"`body_timeout_s` > 0; got {self.max_batch}, {self.max_delay_ms:g}, {self.port}, "
                             f"{self.body_timeout_s:g}")
        positive = ("header_timeout_s", "keepalive_timeout_s", "send_timeout_s", "max_connections", "budget_mb",
                    "max_json_mb")
        bad = [f"`{field}` {getattr(self, field)}" for field in positive if not getattr(self, field) > 0]
        if bad:
            raise UsageError(f"expected a value > 0; got {', '.join(bad)}")
        object.__setattr__(self, "allow_hosts", tuple(self.allow_hosts))
        object.__setattr__(self, "allow_origins", tuple(self.allow_origins))


class Serving(NamedTuple):
    """What a started server serves, and where (given to serve's `on_ready` once it listens)."""

    name: str
    backend: str
    device: str
    url: str  # http://HOST:PORT

    @property
    def model_url(self) -> str:
        return f"{self.url}/v2/models/{self.name}"


def model_name(manifest: Manifest, name: str | None = None) -> str:
    """The name a model is served under: `name`, else the source model's name in the manifest.

    Raises:
        UsageError: a name that cannot be a file name or a URL component.
    """
    chosen = name if name is not None else manifest.source_model.get("name") or "model"
    try:
        return safe_name(chosen, "model name")
    except ArtifactError as exc:
        raise UsageError(f"{exc}; pass `name`") from None


def serve(artifacts: str | os.PathLike, options: ServeOptions | None = None,
          on_ready: Callable[[Serving], None] | None = None) -> None:
    """Serve the artifacts until SIGINT or SIGTERM; on_ready is called once the socket listens.

    A signal stops accepting connections and finishes the requests in flight; then uvicorn raises it
    again (KeyboardInterrupt for SIGINT), once the model is closed.

    Raises:
        UsageError: the web stack ([serve] extra) is missing, a bad name, or the socket cannot listen.
        ArtifactError, BackendError, DeviceError: as runtime.load.
    """
    options = options or ServeOptions()
    try:
        import uvicorn

        from runtime.serve.app import create_app
        from runtime.serve.connections import ConnectionLimits, protocol_class
        from runtime.serve.guard import SECURITY_HEADERS, Guard, RateLimitFilter, allowed_hosts
    except ImportError as exc:
        raise UsageError(f"serving needs the [serve] extra ({exc}); install it with "
                         "`pip install 'featuremaps[serve]'`") from None
    sock = _listen(options.host, options.port)
    default = 1 if options.backend == "onnx" else None
    threads = {"threads": default if options.threads is None else options.threads}
    with sock, load(artifacts, backend=options.backend, device=options.device, **threads) as model:
        name = model_name(model.manifest, options.name)
        app = create_app(model, name, options.max_batch, options.max_delay_ms, options.body_timeout_s,
                         int(options.budget_mb * 2**20), int(options.max_json_mb * 2**20))
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        app = Guard(app, allowed_hosts(host, port, options.allow_hosts), options.allow_origins)
        limits = ConnectionLimits(options.header_timeout_s, _connection_cap(options.max_connections),
                                  options.send_timeout_s)
        # No X-Forwarded-* rewriting (proxy_headers): nothing here reads the client's address, and
        # that middleware would run on every request.
        config = uvicorn.Config(app, http=protocol_class(limits), log_level="warning", access_log=False,
                                server_header=False, proxy_headers=False, headers=SECURITY_HEADERS,
                                timeout_keep_alive=options.keepalive_timeout_s,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        logging.getLogger("uvicorn.error").addFilter(RateLimitFilter())  # after Config has set up logging
        if on_ready is not None:
            on_ready(Serving(name, model.backend, model.device, url))
        # What exists now (modules, the model, the app) lives as long as the process: keep it out of
        # the collector's full passes, which the garbage of every request would otherwise make walk it.
        gc.freeze()
        # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal: run_cli
        # reports it as "interrupted" (exit 130 or 143) after the model is closed.
        uvicorn.Server(config).run(sockets=[sock])


def _connection_cap(wanted: int) -> int:
    """wanted, kept 32 below the soft limit on open files (the model, the event loop and the log need some), so
    that accept() never fails for lack of descriptors: the cap refuses or evicts first."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):
        return wanted
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft - 32))


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (made here so that `port` 0 can report the port it got)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"cannot resolve `host` {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # before on_ready is told the URL: clients may connect at once
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
