"""The process around every CLI: project errors become one line and exit code 2, warnings one line, and
SIGTERM cleans up like Ctrl-C (it becomes KeyboardInterrupt in the main thread, and is never lost).
"""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

from runtime.errors import PARAMETER, FeatureMapsError, FeatureMapsWarning, Interrupted

REDELIVER_S = 0.01  # how soon a swallowed interrupt is raised again: a finalizer has returned by then


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


# Control characters (C0 but newline, DEL, C1) and the Unicode line and paragraph separators: what a
# manifest, stats folder or file name holds must not move the cursor, retitle the window or fake a line.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: object) -> str:
    """text with every control character but newline shown escaped ("\\x1b"), safe to print on a terminal."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), str(text))


def say(*lines: object, file=None, flush: bool = False) -> None:
    """Print lines to stdout (or file), control characters escaped (printable): every CLI line goes through here."""
    print("\n".join(printable(line) for line in lines), file=file or sys.stdout, flush=flush)


def as_flags(message: str, flags: Mapping[str, str] | None = None) -> str:
    """A library message in CLI words, on one line: each parameter it names (see runtime.errors.PARAMETER)
    becomes its flag, `name` or `name=True` -> --name (underscores as dashes) unless `flags` maps it."""
    def flag(match: re.Match) -> str:
        return (flags or {}).get(match[1]) or "--" + match[1].replace("_", "-")

    return " ".join(PARAMETER.sub(flag, str(message)).split())


def _one_line_warnings(show: Callable, flags: Mapping[str, str] | None) -> Callable:
    """A warnings.showwarning that prints project warnings as 'warning: ...' on stderr, like errors."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FeatureMapsWarning):
            say(f"warning: {as_flags(message, flags)}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None,
            flags: Mapping[str, str] | None = None) -> int:
    """Run a CLI entry point: project errors become one line on stderr and exit code 2; a closed
    stdout (`| head`) ends quietly with 141.

    The parameters that messages name are shown as flags (as_flags; `flags` maps the parameters
    whose flag is not --name). Anything else is a bug and propagates with its traceback.
    """
    try:
        with terminate_as_interrupt(), warnings.catch_warnings():  # SIGTERM cleans up like Ctrl-C
            warnings.showwarning = _one_line_warnings(warnings.showwarning, flags)
            code = main(argv)
            sys.stdout.flush()  # a reader that has gone (`| head`) shows here, not as a traceback at exit
            return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        return 141  # what a shell reports for a tool ended by SIGPIPE
    except FeatureMapsError as exc:
        say(f"error: {as_flags(str(exc), flags)}", file=sys.stderr)  # one line, whatever the message held
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)  # 130 for Ctrl-C, 143 for SIGTERM, as a shell says


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone; if so, stdout goes to /dev/null so that the exit flush stays quiet."""
    import select

    try:  # a pipe whose reader has gone polls as an error: another pipe's EPIPE is not ours to hide
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poller.poll(0)):
            return False
    except (AttributeError, ValueError, OSError):  # no poll() here, or no real stdout
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return True
