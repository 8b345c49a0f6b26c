"""`python -m runtime stats`: per-channel statistics and top-k images of every feature map, into a folder."""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

from runtime.artifacts.hashing import MANIFEST, sha256_file
from runtime.jobs.pipeline import Pipelined, usable_cores
from runtime.jobs.progress import progress_bar
from runtime.cli.run import add_input_arguments, open_inputs
from runtime.jobs.engine import load_model
from runtime.jobs.sources import batches, expand_inputs
from runtime.jobs.stats import Stats, check_out


def add_parser(sub) -> None:
    p = sub.add_parser("stats", help="per-channel statistics and top-k images of the feature maps, in one pass",
                       description="Per-channel mean, std, min, max, zero fraction, dead channels, histograms and "
                                   "the top-k images of every feature-map output, in one bounded-memory pass.")
    add_input_arguments(p)
    p.add_argument("--out", required=True, type=Path,
                   help="the folder to write (stats.json, topk/, sources.txt; built beside it, moved into place)")
    p.add_argument("--k", type=int, default=9, help="images kept per channel (default: 9)")
    p.add_argument("--bins", type=int, default=64, help="histogram bins, a power of two (default: 64)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="a channel is dead if it never exceeds this (default: 0)")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = check_out(args.out)  # before loading the model: cheap mistakes first
    args.paths = expand_inputs(args.input)
    with load_model(args.artifacts, args.backend, args.device) as model:
        sha256 = sha256_file(Path(args.artifacts) / MANIFEST)

        def empty() -> Stats:
            return Stats(model.manifest, args.outputs, args.k, args.bins, args.threshold, sha256)

        result = empty()
        sources = open_inputs(args, model)
        total = sum(s.count for s in sources)
        items = batches(sources, model.input_spec, args.batch_size)
        names = list(result.outputs)
        with progress_bar(total, args.quiet) as bar:
            if args.ray is not None:
                from runtime.jobs.ray_exec import ray_stats

                for partial in ray_stats(args.ray, model, items, result):
                    result.merge(partial)
                    bar.update(partial.images)
            else:
                partials: dict[int, Stats] = {}  # one per worker thread, merged at the end (map/reduce)
                lock = threading.Lock()

                def consume(item) -> None:
                    batch, maps = item
                    me = threading.get_ident()
                    with lock:
                        if me not in partials:
                            partials[me] = empty()
                    partials[me].update(batch.start, batch.images, maps, batch.names)
                    with lock:
                        bar.update(len(batch.images))

                # The statistics cost more CPU per image than the model: one thread for them kept a core idle.
                workers = usable_cores()
                with Pipelined(consume, depth=workers, workers=workers) as pipe:  # while batch i+1 is computed
                    for batch in items:
                        pipe.put((batch, model.run(batch.images, names)))
                for partial in partials.values():
                    result.merge(partial)
        result.write(out)
    lines = [f"wrote {out}: {result.images} images ({time.perf_counter() - started:.2f} s)"]
    for name, channels in ((n, o["channels"]) for n, o in result.to_json()["outputs"].items()):
        dead = sum(c["dead"] for c in channels)
        nearly = sum(c["nearly_dead"] and not c["dead"] for c in channels)
        lines.append(f"  {name}: {dead} of {len(channels)} channels dead, {nearly} more nearly dead "
                     f"(above {args.threshold:g} on < 1% of images)")
    print("\n".join(lines))
    return 0
