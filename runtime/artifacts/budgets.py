"""Decoding budgets: how much an untrusted input may make the reader decode, checked before any byte is read.

A 330 KB PNG can declare 13000x13000 16-bit pixels (4.6 GB to decode), a 600-byte zarr.json a
[2, 32768, 32768] array, a 16 KB Zarr chunk 650,000 images, a deflated npz member 1.5 GB. Each reader
compares what the file *declares* (image size, array shape and dtype, chunk shape, a zip member's
uncompressed size) with these budgets first. Going over one is a one-line error naming the budget's
parameter (`max_pixels`: the CLIs show --max-pixels), so a user with a genuinely large input can raise it.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import UsageError

# PIL's own Image.MAX_IMAGE_PIXELS (it only warns there, and refuses at twice that): 89.5 Mpixels,
# about a 9459 x 9459 image.
MAX_PIXELS = 89_478_485
MAX_CHUNK_BYTES = 256 << 20  # one Zarr chunk, decoded: run's own stores write 32-image chunks (3.6 MB on MNIST)
MAX_MEMBER_BYTES = 2 << 30  # one .npz member (or stats top-k array), decoded: the 60,000 MNIST digits are 47 MB
MAX_ROWS = 100_000_000  # images in one input array (Zarr, .npy, .npz)


@dataclass(frozen=True)
class Budgets:
    """The limits a reader checks against what an input declares (see the module docstring)."""

    max_pixels: int = MAX_PIXELS  # pixels per image file (width x height x frames read: the first one)
    max_chunk_bytes: int = MAX_CHUNK_BYTES  # decoded bytes of one Zarr chunk
    max_member_bytes: int = MAX_MEMBER_BYTES  # decoded bytes of one .npz member
    max_rows: int = MAX_ROWS  # rows (images) of one input array
    fill_absent: bool = False  # read a Zarr store's absent chunks as its declared fill value (else an error)

    def __post_init__(self):
        for name in ("max_pixels", "max_chunk_bytes", "max_member_bytes", "max_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"`{name}` must be a positive integer; got {value!r}")


DEFAULT_BUDGETS = Budgets()


def over(what: str, declared: int, budget: str, limit: int, unit: str = "") -> str:
    """The one-line message for an input over a budget: what it declares, the budget's parameter and limit."""
    unit = f" {unit}" if unit else ""
    return (f"{what} declares {declared:,}{unit}, over the budget `{budget}` of {limit:,}{unit} "
            f"(checked before decoding; raise `{budget}` if the input is trusted)")


__all__ = ["Budgets", "DEFAULT_BUDGETS", "over", "MAX_PIXELS", "MAX_CHUNK_BYTES", "MAX_MEMBER_BYTES", "MAX_ROWS"]
