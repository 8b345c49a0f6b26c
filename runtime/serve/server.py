"""`python -m runtime serve ARTIFACTS`: serve the artifacts over the Open Inference Protocol v2 with uvicorn.

Binds 127.0.0.1 by default. SIGINT and SIGTERM stop accepting connections, finish the requests
in flight, stop the batching worker and close the model.
"""
from __future__ import annotations

import argparse
import gc
import socket
from pathlib import Path

from runtime.api import DEVICES, load
from runtime.backends import BACKENDS
from runtime.errors import UsageError
from runtime.artifacts.manifest import Manifest
from runtime.artifacts.paths import safe_name

GRACEFUL_SHUTDOWN_S = 30  # how long in-flight requests may take to finish after SIGINT/SIGTERM


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve feature maps over the Open Inference Protocol v2 (KServe, Triton clients)",
                       description="Serve the artifacts over HTTP with the Open Inference Protocol v2 and dynamic "
                                   "batching. Needs the [serve] extra.")
    p.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    p.add_argument("--name", help="model name in the URLs (default: the model's name in the manifest)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="onnx", help="default: onnx")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="default: cpu; gpu is an error where none is usable")
    p.add_argument("--max-batch", type=int, default=64,
                   help="most images run together, and most per request (default: 64)")
    p.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long a batch that is not full waits for more requests (default: 0, as Triton: "
                        "batches still form from requests that queue while the model runs)")
    p.add_argument("--threads", type=int,
                   help="the backend's intra-op threads (onnx default: 1, so that onnxruntime's threads never "
                        "spin against the HTTP event loop; more pays off only for large batches on many cores)")
    p.add_argument("--body-timeout-s", type=float, default=30.0,
                   help="a request body must arrive within this time, else 408 (default: 30)")
    p.set_defaults(func=cmd_serve)


def model_name(manifest: Manifest, name: str | None = None) -> str:
    """The name a model is served under: `name`, else the source model's name in the manifest."""
    chosen = name if name is not None else manifest.source_model.get("name") or "model"
    try:
        return safe_name(chosen, "model name")
    except Exception as exc:
        raise UsageError(f"{exc}; pass --name") from None


def cmd_serve(args: argparse.Namespace) -> int:
    if args.max_batch < 1 or args.max_delay_ms < 0 or not 0 <= args.port <= 65535 or not args.body_timeout_s > 0:
        raise UsageError(f"expected --max-batch >= 1, --max-delay-ms >= 0, --port 0..65535 and --body-timeout-s > 0; "
                         f"got {args.max_batch}, {args.max_delay_ms:g}, {args.port}, {args.body_timeout_s:g}")
    try:
        import uvicorn

        from runtime.serve.app import create_app
    except ImportError as exc:
        raise UsageError(f"`serve` needs the [serve] extra ({exc}); install it with "
                         "`pip install 'featuremaps[serve]'`") from None
    sock = _listen(args.host, args.port)
    default = 1 if args.backend == "onnx" else None
    options = {"threads": default if args.threads is None else args.threads}
    with sock, load(args.artifacts, backend=args.backend, device=args.device, **options) as model:
        name = model_name(model.manifest, args.name)
        app = create_app(model, name, args.max_batch, args.max_delay_ms, args.body_timeout_s)
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        # No X-Forwarded-* rewriting (proxy_headers): nothing here reads the client's address, and
        # that middleware would run on every request.
        config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, proxy_headers=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        print(f"serving model {name!r} ({model.backend} on {model.device}, max batch {args.max_batch}, "
              f"max delay {args.max_delay_ms:g} ms) at {url}/v2/models/{name}", flush=True)
        # What exists now (modules, the model, the app) lives as long as the process: keep it out of
        # the collector's full passes, which the garbage of every request would otherwise make walk it.
        gc.freeze()
        # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal: run_cli
        # reports it as "interrupted" (exit 130 or 143) after the model is closed.
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (made here so that --port 0 can report the port it got)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise UsageError(f"cannot resolve --host {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # before the URL is printed: clients may connect at once
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
