"""The project's error hierarchy, and the one place CLIs turn errors into exit codes.

Every message says what was expected, what was received, and what is available.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from typing import Callable, Sequence


class FeatureMapsError(Exception):
    """Base class: an expected failure caused by the user's input or environment."""


class ArtifactError(FeatureMapsError):
    """Artifacts missing, corrupt, tampered with, or of an unknown schema version."""


class InputError(FeatureMapsError, ValueError):
    """Images of the wrong shape, dtype or value range, NaN/inf, or an unknown output name."""


class BackendError(FeatureMapsError):
    """A backend that is unknown or not installed."""


class DeviceError(BackendError):
    """A device that was asked for but is not usable here."""


class DataError(FeatureMapsError):
    """A data set or image file that cannot be found or read."""


class ExportError(FeatureMapsError):
    """A model that cannot be exported, or artifacts that failed verification."""


class UsageError(FeatureMapsError):
    """Bad command-line arguments, reported like every other project error."""


class FeatureMapsWarning(UserWarning):
    """Base class: something that is likely wrong but does not stop the work (CLIs print one line)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line, exit 2) instead of printing usage."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def comma_list(text: str) -> list[str]:
    """argparse type for "a,b,c" options: the non-empty, stripped names."""
    return [n.strip() for n in text.split(",") if n.strip()]


def positive_int(text: str) -> int:
    """argparse type for counts: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for tolerances: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _one_line_warnings(show: Callable) -> Callable:
    """A warnings.showwarning that prints project warnings as 'warning: ...' on stderr, like errors."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FeatureMapsWarning):
            print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a CLI entry point: project errors become one line on stderr and exit code 2; a closed
    stdout (`| head`) ends quietly with 141.

    Anything else is a bug and propagates with its traceback.
    """
    from .signals import terminate_as_interrupt

    try:
        with terminate_as_interrupt(), warnings.catch_warnings():  # SIGTERM cleans up like Ctrl-C
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            code = main(argv)
            sys.stdout.flush()  # a reader that has gone (`| head`) shows here, not as a traceback at exit
            return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        return 141  # what a shell reports for a tool ended by SIGPIPE
    except FeatureMapsError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
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
