"""SIGTERM cleans up like Ctrl-C: it becomes KeyboardInterrupt in the main thread, and is never lost."""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

REDELIVER_S = 0.01  # how soon a swallowed interrupt is raised again: a finalizer has returned by then


class Interrupted(KeyboardInterrupt):
    """KeyboardInterrupt that knows its signal (exit status 128 + signum, as a shell reports it)."""

    def __init__(self, signum: int):
        super().__init__(f"signal {int(signum)}")
        self.signum = int(signum)


def _raise_interrupt(signum, frame):
    raise Interrupted(signum)


def _redelivering_hook(previous_hook, swallowed: list[int]):
    """An unraisable-exception hook that raises a swallowed interrupt again, shortly after.

    Python runs a signal's handler in whatever Python code runs next, which may be a finalizer
    (`__del__`, a weakref callback: TensorFlow has many, run by any allocation). What a finalizer
    raises is only printed ("Exception ignored in ...") and the work would go on to the end. So a
    SIGALRM raises it again once the finalizer has returned (or in the next one, which repeats this).
    """

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):
            return previous_hook(unraisable)
        swallowed.append(unraisable.exc_value.signum)
        signal.signal(signal.SIGALRM, again)
        signal.setitimer(signal.ITIMER_REAL, REDELIVER_S)

    def again(_alarm, frame):
        if frame is not None and frame.f_code is hook.__code__:  # raised inside the hook, it would be lost
            signal.setitimer(signal.ITIMER_REAL, REDELIVER_S)
            return
        _raise_interrupt(swallowed.pop(), frame)

    return hook


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise Interrupted (a KeyboardInterrupt), so `finally` clauses
    and temp-file cleanup run, even where the signal lands in a finalizer.

    A SIGINT that the parent set to be ignored (`nohup`, `cmd &`) stays ignored. Outside the main thread
    (where Python cannot install handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [signal.SIGTERM] + [signal.SIGINT] * (signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    previous = {signum: signal.getsignal(signum) for signum in handled + [signal.SIGALRM]}
    swallowed: list[int] = []
    previous_hook, sys.unraisablehook = sys.unraisablehook, _redelivering_hook(sys.unraisablehook, swallowed)
    try:
        for signum in handled:
            signal.signal(signum, _raise_interrupt)
        yield
    finally:
        if swallowed:  # swallowed just before the end: not raised again yet
            signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if swallowed:
        raise Interrupted(swallowed.pop())
