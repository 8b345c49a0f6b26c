"""Overlap compute with output: the main thread computes batch i+1 while worker threads consume batch i.

numpy reductions, Blosc and file writes release the GIL, so on two cores the two really overlap.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
_DONE = object()


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one, e.g. under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Pipelined(Generic[T]):
    """Calls consume(item) for each put() item in `workers` threads; at most `depth` items wait.

    With one worker, items are consumed in order; with more, concurrently and in any order (consume
    must then be thread-safe). An error in a worker is raised again in the caller's thread by the
    next put() or by close(). On leaving the block with an exception (e.g. KeyboardInterrupt), queued
    items are dropped and the workers are joined after the items they are consuming, so the caller
    may clean up safely.
    """

    def __init__(self, consume: Callable[[T], None], depth: int = 2, workers: int = 1):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"featuremaps-writer-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE or self._stop.is_set():
                return
            try:
                self._consume(item)
            except BaseException as exc:  # handed to the caller's thread
                if self._error is None:
                    self._error = exc
                self._stop.set()
                return

    def put(self, item: T) -> None:
        while True:
            self._raise_error()
            try:
                self._queue.put(item, timeout=0.1)  # a timeout, so that a dead worker is noticed
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every item is consumed; raise the worker's error if any."""
        self._finish()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _finish(self) -> None:
        """One _DONE per live worker (a worker that stopped on an error takes none), then join them all."""
        for thread in self._threads:
            while thread.is_alive():
                try:
                    self._queue.put(_DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> "Pipelined[T]":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
            return
        self._stop.set()
        while True:  # drop what waits, so that the worker sees the stop at once
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._finish()
