"""`python -m runtime stats`: its flags and its summary lines (runtime/jobs/dataset_stats.py does the work)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.cli.process import say
from runtime.cli.run import add_input_arguments, input_options
from runtime.jobs.dataset_stats import StatsOptions, dataset_stats
from runtime.jobs.stats_graph import ENGINES


def add_parser(sub) -> None:
    p = sub.add_parser("stats", help="per-channel statistics and top-k images of the feature maps, in one pass",
                       description="Per-channel mean, std, min, max, zero fraction, dead channels, histograms and "
                                   "the top-k images of every feature-map output, in one bounded-memory pass.")
    add_input_arguments(p)
    p.add_argument("--out", required=True, type=Path,
                   help="the folder to write (stats.json, topk/, sources.json; built beside it, moved into place)")
    p.add_argument("--k", type=int, default=9, help="images kept per channel (default: 9)")
    p.add_argument("--bins", type=int, default=64, help="histogram bins, a power of two (default: 64)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="a channel is dead if it never exceeds this (default: 0)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="graph: reductions appended to the ONNX model, maps never leave onnxruntime; numpy: maps "
                        "copied out and reduced in numpy (faster on CPUs); auto (default): graph on a GPU")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    result = dataset_stats(StatsOptions(**input_options(args), out=args.out, k=args.k, bins=args.bins,
                                        threshold=args.threshold, engine=args.engine))
    lines = [f"wrote {result.out}: {result.stats.images} images ({result.seconds:.2f} s)"]
    for name, channels in ((n, o["channels"]) for n, o in result.stats.to_json()["outputs"].items()):
        dead = sum(c["dead"] for c in channels)
        nearly = sum(c["nearly_dead"] and not c["dead"] for c in channels)
        lines.append(f"  {name}: {dead} of {len(channels)} channels dead, {nearly} more nearly dead "
                     f"(above {args.threshold:g} on < 1% of images)")
    say("\n".join(lines))
    return 0
