"""SIGTERM cleans up like Ctrl-C: it becomes KeyboardInterrupt in the main thread."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {int(signum)}")


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, so `finally` clauses and temp-file cleanup run.

    Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
