"""`python -m runtime triton ARTIFACTS --out model_repository/`: a Triton Inference Server model repository
(runtime/serve/triton.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.artifacts.manifest import ONNX_FILE
from runtime.cli.process import say
from runtime.serve.triton import CONFIG, KINDS, VERSION, TritonOptions, write_repository


def add_parser(sub) -> None:
    p = sub.add_parser("triton", help="write a Triton Inference Server model repository (config.pbtxt + model.onnx)",
                       description="Write OUT/NAME/config.pbtxt and OUT/NAME/1/model.onnx for Triton Inference "
                                   "Server (onnxruntime backend), atomically; other models in OUT are kept.")
    p.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    p.add_argument("--out", type=Path, required=True, help="the model repository folder (created if missing)")
    p.add_argument("--name", help="model name (default: the model's name in the manifest)")
    p.add_argument("--max-batch", type=int, default=64, help="max_batch_size (default: 64)")
    p.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="dynamic batching max_queue_delay (default: 0, Triton's default)")
    p.add_argument("--instances", type=int, default=1, help="model instances per device (default: 1)")
    p.add_argument("--kind", choices=sorted(KINDS), default="auto",
                   help="instance kind: gpu, cpu, or auto (GPUs when Triton has them; default)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT/NAME that holds a config.pbtxt")
    p.set_defaults(func=cmd_triton)


def cmd_triton(args: argparse.Namespace) -> int:
    options = TritonOptions(name=args.name, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                            instances=args.instances, kind=args.kind, force=args.force)
    folder = write_repository(args.artifacts, args.out, options)
    say(f"wrote {folder / CONFIG} and {folder / VERSION / ONNX_FILE}\n"
          f"run: docker run --rm -p 8000:8000 -v {args.out.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
          f"tritonserver --model-repository=/models")
    return 0
