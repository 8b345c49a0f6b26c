"""Progress bars for long jobs: tqdm on stderr, silent when stderr is not a terminal or when asked."""
from __future__ import annotations

import sys


def progress_bar(total: int | None, quiet: bool = False, unit: str = "img"):
    """A tqdm bar (a context manager with update(n)); disabled when quiet or when stderr is not a terminal."""
    from tqdm import tqdm

    # disable=None: tqdm turns itself off when its stream is not a TTY (logs get no escape codes).
    return tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, disable=True if quiet else None,
                dynamic_ncols=True, leave=False)
