"""The `stats` job: per-channel statistics and top-k images of every feature map over many images, in one
bounded-memory pass (here, one partial per worker thread, or one per batch on Ray), written to a folder.

    result = dataset_stats(StatsOptions(artifacts="artifacts", inputs=["mnist.npz"], out=Path("stats")))
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runtime.artifacts.hashing import MANIFEST, sha256_file
from runtime.jobs.engine import JobInputs, input_paths, job_session_options, load_model, open_inputs
from runtime.jobs.pipeline import Pipelined, usable_cores
from runtime.jobs.progress import progress_bar
from runtime.jobs.sources import batches
from runtime.jobs.stats import Stats, check_out
from runtime.jobs.stats_graph import stats_graph


@dataclass(kw_only=True)
class StatsOptions(JobInputs):
    """What `dataset_stats` reads (JobInputs) and writes.

    Attributes:
        out: the folder to write (stats.json, topk/, sources.json; built beside it, moved into place).
        k: images kept per channel.
        bins: histogram bins, a power of two.
        threshold: a channel is dead if it never exceeds this.
        engine: "graph": reductions appended to the ONNX model (runtime.jobs.stats_graph), the maps never
            leave onnxruntime; "numpy": the maps are copied out and reduced in numpy; "auto": the graph on a GPU.
    """

    out: str | os.PathLike
    k: int = 9
    bins: int = 64
    threshold: float = 0.0
    engine: str = "auto"


@dataclass
class StatsResult:
    """What `dataset_stats` wrote: the statistics, the folder, and how long it took."""

    stats: Stats
    out: Path
    seconds: float


def dataset_stats(options: StatsOptions) -> StatsResult:
    """Statistics of the feature maps of every input image, written to `options.out` (see runtime.jobs.stats).

    Raises:
        DataError: a bad `out`, unreadable inputs, a failed write.
        ArtifactError, BackendError, DeviceError, InputError: as runtime.load, Model.run and Stats raise them.
    """
    started = time.perf_counter()
    out = check_out(options.out)  # before loading the model: cheap mistakes first
    paths = input_paths(options)
    with load_model(options.artifacts, options.backend, options.device) as model:
        sha256 = sha256_file(Path(options.artifacts) / MANIFEST)

        def empty() -> Stats:
            return Stats(model.manifest, options.outputs, options.k, options.bins, options.threshold, sha256)

        result = empty()
        graph = stats_graph(model, list(result.outputs), options.bins, options.engine, job_session_options(model))
        sources = open_inputs(paths, model, options)
        total = sum(s.count for s in sources)
        items = batches(sources, model.input_spec, options.batch_size)
        names = list(result.outputs)
        with progress_bar(total, options.quiet) as bar:
            if options.ray is not None:
                from runtime.jobs.ray_exec import ray_stats

                for partial in ray_stats(options.ray, model, items, result, logs=options.ray_logs,
                                         graph=graph is not None):
                    result.merge(partial)
                    bar.update(partial.images)
            elif graph is not None:  # the reductions run in onnxruntime's threads: nothing left to overlap
                for batch in items:
                    result.add(batch.start, batch.images, graph.run(batch.images), batch.names)
                    bar.update(len(batch.images))
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
        result.finish(model).write(out)
    return StatsResult(result, out, time.perf_counter() - started)
