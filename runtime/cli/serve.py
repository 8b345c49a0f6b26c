"""`python -m runtime serve ARTIFACTS`: serve the artifacts over the Open Inference Protocol v2
(runtime/serve/server.py).

Nothing here imports the web stack: runtime.serve.server.serve imports uvicorn and Starlette when it starts.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.api import DEVICES
from runtime.backends import BACKENDS
from runtime.cli.process import say
from runtime.serve.server import ServeOptions, Serving, serve


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve feature maps over the Open Inference Protocol v2 (KServe, Triton clients)",
                       description="Serve the artifacts over HTTP with the Open Inference Protocol v2 and dynamic "
                                   "batching. Needs the [serve] extra.")
    p.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    p.add_argument("--name", help="model name in the URLs (default: the model's name in the manifest)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="onnx", help="default: onnx")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="default: cpu; gpu is an error where none is usable")
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
    g = p.add_argument_group("network safety", "defaults that hold on a hostile network (README, \"Threat model\")")
    g.add_argument("--allow-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="also answer requests whose Host is NAME (a reverse proxy's or a Kubernetes service's name; "
                        "repeatable; '*': any). Default: only the bound address, localhost, 127.0.0.1 and [::1] "
                        "with the port; other Hosts get 421 (DNS rebinding)")
    g.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN (scheme://host[:port]) POST requests (repeatable; '*': any). "
                        "Default: only the server's own page; others get 403")
    g.add_argument("--header-timeout-s", type=float, default=5.0,
                   help="a request line and headers must arrive within this time, else the connection is dropped "
                        "(default: 5)")
    g.add_argument("--keepalive-timeout-s", type=float, default=5.0,
                   help="an idle keep-alive connection is closed after this time (default: 5)")
    g.add_argument("--send-timeout-s", type=float, default=10.0,
                   help="a response the client does not read for this long is dropped (default: 10)")
    g.add_argument("--max-connections", type=int, default=512,
                   help="most open connections; past it the longest idle one is closed, else 503 (default: 512, "
                        "kept under the open-file limit)")
    g.add_argument("--budget-mb", type=float, default=256.0,
                   help="most request and response bytes in flight, all together; past it 503 with Retry-After "
                        "(default: 256)")
    g.add_argument("--max-json-mb", type=float, default=16.0,
                   help="largest JSON response; larger ones are refused with a hint to ask for binary outputs "
                        "(default: 16)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    options = ServeOptions(host=args.host, port=args.port, name=args.name, backend=args.backend, device=args.device,
                           max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, threads=args.threads,
                           body_timeout_s=args.body_timeout_s, allow_hosts=tuple(args.allow_host),
                           allow_origins=tuple(args.allow_origin), header_timeout_s=args.header_timeout_s,
                           keepalive_timeout_s=args.keepalive_timeout_s, send_timeout_s=args.send_timeout_s,
                           max_connections=args.max_connections, budget_mb=args.budget_mb,
                           max_json_mb=args.max_json_mb)

    def announce(serving: Serving) -> None:
        say(f"serving model {serving.name!r} ({serving.backend} on {serving.device}, max batch {options.max_batch}, "
            f"max delay {options.max_delay_ms:g} ms) at {serving.model_url}; explorer at {serving.url}/", flush=True)

    serve(args.artifacts, options, on_ready=announce)
    return 0
