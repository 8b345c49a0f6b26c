"""Run the model on a Ray cluster with Ray Data: map_batches over an actor pool, one loaded model per actor.

Needs the [ray] extra on the driver; each worker needs `featuremaps[onnx]` and the artifacts
folder at the same path (or a shared file system). Batches of input pixels travel from the
driver through Ray's object store; `run` gets the maps back in order, `stats` gets one mergeable
partial per batch (map/reduce), so both give exactly what the local path gives.
"""
from __future__ import annotations

import copy
import logging
import os
import pickle
import signal
import socket
import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from runtime.api import Model
from runtime.errors import BackendError, Interrupted
from runtime.jobs.sources import Batch
from runtime.jobs.stats import Stats


def connect(address: str | None, logs: bool = False) -> None:
    """Join the Ray cluster at address ("" or None: $RAY_ADDRESS if set, else start a local runtime).

    Ray's own log lines (start-up, workers' output) reach the terminal only with `logs`.
    """
    try:
        import ray
    except ImportError:
        raise BackendError("`ray` needs Ray: pip install 'featuremaps[ray]'") from None
    if ray.is_initialized():
        return
    _check_reachable(address or os.environ.get("RAY_ADDRESS", ""))
    # ray.init replaces the SIGTERM handler with sys.exit(15): no cleanup message, exit status 15. Ours
    # (SIGTERM cleans up like Ctrl-C, exit 143) comes back once it returns; a SIGTERM while it starts is ours too.
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=logs,
                 logging_level="INFO" if logs else "ERROR", configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "a local runtime"
        raise BackendError(f"cannot reach the Ray cluster at {where!r}: {' '.join(str(exc).split())}") from None
    except SystemExit as exc:
        if exc.code == signal.SIGTERM:  # Ray's handler, while it started
            raise Interrupted(signal.SIGTERM) from None
        raise
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


def _check_reachable(address: str) -> None:
    """Fail in seconds on a HOST:PORT nobody listens at (ray.init retries for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "local", ray://...: Ray's own checks
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise BackendError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}; start one with "
                           "`ray start --head`, or leave out the address for a local Ray runtime") from None


class _Worker:
    """A Ray actor: loads the model once, then maps batches of pixels to maps or to a partial Stats."""

    def __init__(self, artifacts: str, backend: str, device: str, names: list[str], stats: bytes | None,
                 graph: bool = False):
        from runtime.jobs.engine import job_session_options, load_model  # in the worker process
        from runtime.jobs.stats_graph import stats_graph

        self.model = load_model(artifacts, backend, device)
        self.names = names
        self.empty_stats = pickle.loads(stats) if stats is not None else None
        self.graph = (stats_graph(self.model, names, self.empty_stats.bins, "graph", job_session_options(self.model))
                      if graph and self.empty_stats is not None else None)

    def __call__(self, batch: dict) -> dict:
        start, images = int(batch["start"][0]), np.asarray(batch["images"][0])
        if self.graph is not None:  # the same stats graph as here: winners' maps are recomputed by the driver
            partial = copy.deepcopy(self.empty_stats).add(start, images, self.graph.run(images))
            return {"start": batch["start"], "partial": np.array([pickle.dumps(partial)], dtype=object)}
        maps = self.model.run(images, self.names)
        if self.empty_stats is None:
            return {"start": batch["start"], **{n: a[None] for n, a in maps.items()}}
        partial = copy.deepcopy(self.empty_stats).update(start, images, maps)
        return {"start": batch["start"], "partial": np.array([pickle.dumps(partial)], dtype=object)}


def _mapped(address: str, model: Model, items: Iterable[Batch], names: list[str], stats: Stats | None,
            logs: bool = False, graph: bool = False):
    """A Ray Dataset of the batches, mapped by an actor pool (one actor per CPU of the cluster)."""
    connect(address, logs)
    import ray
    import ray.data

    if not logs:
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its INFO lines would bury our messages and bar
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # maps are written in input order
    context.enable_progress_bars = False  # ours counts images
    dataset = ray.data.from_items([{"start": b.start, "images": b.images} for b in items])
    pool = max(1, int(ray.cluster_resources().get("CPU", 1)))
    args = (str(Path(model.folder).resolve()), model.backend, model.device, names,
            pickle.dumps(stats) if stats is not None else None, graph)
    # max_restarts=0: Ray Data's default (restart lost actors forever) prints an error-level line from
    # core_worker.cc on every run ("constructor arguments in the object store and max_restarts > 0",
    # ray#53727); a lost worker now fails the job with Ray's error, and the job can simply be run again.
    # Ray 2.60 has no named parameter for it yet: the remote-args route warns that it is deprecated.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return dataset.map_batches(
            _Worker, batch_size=1, batch_format="numpy", num_cpus=1, fn_constructor_args=args, max_restarts=0,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(pool, max(dataset.count(), 1))))


def ray_maps(address: str, model: Model, items: Iterable[Batch], names: list[str],
             logs: bool = False) -> Iterator[tuple]:
    """(batch, {output name: maps}) in input order, computed on Ray (Ray's own log lines only with `logs`)."""
    items = list(items)  # the driver keeps row names; pixels go to the object store
    if not items:
        return iter(())
    by_start = {b.start: b for b in items}
    dataset = _mapped(address, model, items, names, None, logs)
    return ((by_start[int(r["start"][0])], {n: np.asarray(r[n][0]) for n in names})
            for r in dataset.iter_batches(batch_size=1, batch_format="numpy"))


def ray_stats(address: str, model: Model, items: Iterable[Batch], empty: Stats, logs: bool = False,
              graph: bool = False) -> Iterator[Stats]:
    """One partial Stats per batch, computed on Ray, for the caller to merge (Ray's log lines only with `logs`;
    graph: with runtime.jobs.stats_graph, as the local path; the caller then recomputes the winners' maps with
    Stats.finish)."""
    items = list(items)
    if not items:
        return
    row_names = {b.start: b.names for b in items}  # kept on the driver
    dataset = _mapped(address, model, items, list(empty.outputs), empty, logs, graph)
    for r in dataset.iter_batches(batch_size=1, batch_format="numpy"):
        partial: Stats = pickle.loads(r["partial"][0])
        start = int(r["start"][0])
        partial.sources.update(zip(range(start, start + partial.images), row_names[start]))
        yield partial
