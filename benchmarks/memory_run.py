"""Peak memory of one big `Model.run()`: outputs filled chunk by chunk vs one backend call for the whole batch.

Each measurement runs in a fresh process (peak RSS is per process): load the artifacts, make N
uint8 images, run them all in one call, report peak RSS (ru_maxrss) against the bytes of the
returned outputs. "one backend call" is what run() did before it filled preallocated outputs.

    python -m benchmarks.memory_run ARTIFACTS [--images 10000] [--backend onnx]
"""
from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from typing import Sequence

from runtime.cli.args import ArgumentParser
from runtime.cli.process import run_cli

MODES = ("chunked", "one backend call")


def measure(artifacts: str, images: int, backend: str, mode: str) -> dict:
    """In this process: peak RSS of running `images` zeros through the model in one call."""
    import numpy as np

    import runtime
    from runtime.preprocess import to_batch

    with runtime.load(artifacts, backend=backend) as model:
        x = np.zeros((images, *model.input_spec.image_shape), np.uint8)
        before = _current_rss()
        if mode == "chunked":
            out = model.run(x)
        else:  # the backend on the whole batch at once
            out = model._runner.run(to_batch(x, model.input_spec), model.output_names)
        outputs = sum(a.nbytes for a in out.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"mode": mode, "images": images, "outputs_bytes": outputs, "rss_before_run": before, "peak_rss": peak}


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m benchmarks.memory_run", description=__doc__.splitlines()[0])
    p.add_argument("artifacts")
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--backend", default="onnx")
    p.add_argument("--mode", choices=MODES, help="measure one mode in this process (used by the parent)")
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args.artifacts, args.images, args.backend, args.mode)))
        return 0
    print(f"{args.images} images, backend {args.backend}, CPU {_cpu()}")
    for mode in MODES:
        result = subprocess.run([sys.executable, "-m", "benchmarks.memory_run", args.artifacts, "--images",
                                 str(args.images), "--backend", args.backend, "--mode", mode],
                                capture_output=True, text=True, check=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
        gb = 1e9
        print(f"  {mode:<17} outputs {r['outputs_bytes'] / gb:.2f} GB, peak RSS {r['peak_rss'] / gb:.2f} GB "
              f"= {r['peak_rss'] / r['outputs_bytes']:.2f}x the outputs "
              f"(growth during run() {(r['peak_rss'] - r['rss_before_run']) / r['outputs_bytes']:.2f}x)")
    return 0


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
