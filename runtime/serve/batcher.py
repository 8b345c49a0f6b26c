"""Dynamic batching: requests that arrive together run as one batch in a worker thread, then split back.

The worker takes every request already queued (up to max_batch images), waits at most
max_delay for more while the batch is not full, runs the model once, and hands each request
its own rows. With max_delay 0 (Triton's default too), batches still form under load: requests
queue up while the previous batch runs.

The handoff is what one-image requests pay per image, so it is kept to C-level calls: a
SimpleQueue in, and one call_soon_threadsafe per batch (one wake-up of the event loop) out.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from runtime.api import Model
from runtime.errors import InputError


@dataclass
class _Job:
    batch: np.ndarray  # [n, *sample], already checked by to_batch; a batch runs jobs of one sample size
    names: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class BatchStats:
    """What the worker ran (served as Triton's statistics: inference_count / execution_count)."""

    batches: int = 0
    images: int = 0
    requests: int = 0

    def add(self, images: int, requests: int) -> None:
        self.batches += 1
        self.images += images
        self.requests += requests


_STOP = object()


class Batcher:
    """Merges concurrent requests into batches of at most max_batch images, run in one worker thread."""

    def __init__(self, model: Model, max_batch: int = 64, max_delay_ms: float = 0.0):
        if max_batch < 1 or max_delay_ms < 0:
            raise InputError(f"expected `max_batch` >= 1 and `max_delay_ms` >= 0; got {max_batch}, {max_delay_ms:g}")
        self.model, self.max_batch, self.max_delay = model, max_batch, max_delay_ms / 1000.0
        self.stats = BatchStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="featuremaps-batcher", daemon=True)
        self._thread.start()

    async def run(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """The model's outputs `names` for this batch, computed together with whatever else is queued.

        Raises:
            InputError: more images than max_batch, or the batcher is closed.
        """
        if len(batch) > self.max_batch:
            raise InputError(f"a request holds {len(batch)} images; this server takes at most {self.max_batch} "
                             "per request (its max batch)")
        if self._closed:
            raise InputError("the server is shutting down")
        loop = asyncio.get_running_loop()
        job = _Job(batch, names, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        """Finish the queued requests, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _work(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            jobs, count = [first], len(first.batch)
            deadline = time.monotonic() + self.max_delay
            while count < self.max_batch:
                try:
                    wait = deadline - time.monotonic()
                    job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                full = job is _STOP or count + len(job.batch) > self.max_batch
                if full or job.batch.shape[1:] != first.batch.shape[1:]:  # a batch holds one sample size
                    carry = job  # runs first in the next batch (or stops the worker after this one)
                    break
                jobs.append(job)
                count += len(job.batch)
            self._run(jobs, count)

    def _run(self, jobs: list[_Job], count: int) -> None:
        names = list(dict.fromkeys(n for job in jobs for n in job.names))
        try:
            batch = jobs[0].batch if len(jobs) == 1 else np.concatenate([job.batch for job in jobs])
            results = self.model.run(batch, names)  # re-checks the merged batch: microseconds
        except Exception as exc:  # delivered to every waiting request, never kills the worker
            _deliver([(job, None, exc) for job in jobs])
            return
        self.stats.add(count, len(jobs))
        settled, start = [], 0
        for job in jobs:
            stop = start + len(job.batch)
            settled.append((job, {n: results[n][start:stop] for n in job.names}, None))
            start = stop
        _deliver(settled)


def _deliver(settled: list[tuple[_Job, dict | None, Exception | None]]) -> None:
    """Hand results to their event loops: one thread-safe wake-up per loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for job, result, exc in settled:
        by_loop.setdefault(job.loop, []).append((job.future, result, exc))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[asyncio.Future, dict | None, Exception | None]]) -> None:
    for future, result, exc in items:
        if future.done():  # the request was cancelled (client gone)
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
