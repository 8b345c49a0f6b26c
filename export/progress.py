"""Export progress on stderr: what runs now, how long each stage took, a bar over verified images."""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator


def peak_rss_bytes() -> int:
    """The process' peak resident memory so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class Progress:
    """Stage lines and a tqdm bar on a terminal; in logs (not a tty) one line per finished stage.

    Records seconds and the process' peak RSS at the end of each stage (for benchmarks).
    """

    def __init__(self, stream: IO[str] | None = sys.stderr):
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.seconds: dict[str, float] = {}
        self.peak_rss: dict[str, int] = {}

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.tty:
            self.say(f"export: {name} ...")
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        self.peak_rss[name] = peak_rss_bytes()
        self.say(f"export: {name} done in {self.seconds[name]:.1f} s")

    def bar(self, total: int, unit: str = "image", desc: str = "export: verification"):
        """A tqdm bar on a terminal; disabled (silent) in logs."""
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, desc=desc, file=self.stream or sys.stderr,
                    disable=not self.tty, leave=False, dynamic_ncols=True)
