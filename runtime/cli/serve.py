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
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    options = ServeOptions(host=args.host, port=args.port, name=args.name, backend=args.backend, device=args.device,
                           max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, threads=args.threads,
                           body_timeout_s=args.body_timeout_s)

    def announce(serving: Serving) -> None:
        say(f"serving model {serving.name!r} ({serving.backend} on {serving.device}, max batch {options.max_batch}, "
            f"max delay {options.max_delay_ms:g} ms) at {serving.model_url}; explorer at {serving.url}/", flush=True)

    serve(args.artifacts, options, on_ready=announce)
    return 0
