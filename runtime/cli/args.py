"""argparse, the project's way: a bad argument is a UsageError (one line, exit 2), and one type per kind of value."""
from __future__ import annotations

import argparse

from runtime.errors import UsageError


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
