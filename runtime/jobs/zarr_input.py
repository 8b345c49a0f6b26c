"""Zarr inputs of `run` and `stats`, read as untrusted files: declarations checked first, chunks read once.

- What the store declares (shape, dtype, chunk shape) is checked against the model and the Budgets
  before any chunk is read (declared(): a zero-byte view of the declared shape goes through the same
  checks as real images).
- Reads are chunk-aligned: each batch covers whole chunks (or shards) along the rows, so each chunk is
  decoded once, however its size compares with the batch size.
- Chunk files are opened relative to the store's descriptor without following symbolic links
  (paths.open_inside) and read from that descriptor; an absent chunk is an error, not silent fill
  values, unless the caller accepts the declared fill value (`fill_absent`).
"""
from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.artifacts.budgets import Budgets, over
from runtime.artifacts.paths import open_inside
from runtime.errors import DataError

METADATA = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def declared(shape, dtype) -> np.ndarray:
    """A read-only view with the declared shape and dtype that occupies no memory: validate it, never read it."""
    view = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=tuple(int(d) for d in shape),
                                           strides=(0,) * len(shape), writeable=False)
    return view


def check_rows(what: str, rows: int, budgets: Budgets) -> None:
    """Raises DataError when an input array (or all of them: what says which) declares more rows than `max_rows`."""
    if rows > budgets.max_rows:
        raise DataError(over(what, rows, "max_rows", budgets.max_rows, "rows"))


def open_zarr(path: Path, key: str | None, budgets: Budgets, pick_key):
    """The array of a Zarr input (a lazily read zarr.Array over a no-follow store) and its member suffix.

    Raises:
        DataError: zarr missing, unreadable metadata, a missing or ambiguous key, a chunk over `max_chunk_bytes`.
    """
    try:
        import zarr
    except ImportError:
        raise DataError(f"reading Zarr input {str(path)!r} needs zarr: pip install 'featuremaps[store]'") from None
    try:
        # A stored chunk (or shard) file may hold at most the chunk budget plus what compression adds.
        most = budgets.max_chunk_bytes + budgets.max_chunk_bytes // 8 + (64 << 10)
        store = _store_class()(path, budgets.fill_absent, most)
        node = zarr.open(store=store, mode="r")
        if isinstance(node, zarr.Group):
            name = pick_key(path, sorted(n for n, _ in node.arrays()), key)
            array, member = node[name], f":{name}"
        elif key is not None:
            raise DataError(f"{str(path)!r} is a single Zarr array; `key` {key!r} applies to groups and .npz files")
        else:
            array, member = node, ""
        dtype = np.dtype(array.dtype)
        unit = array.shards or array.chunks  # what one read decodes along the rows: a shard, or a chunk
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read Zarr input {str(path)!r}: {' '.join(str(exc).split())[:300]}") from None
    if (len(unit) != len(array.shape) or not all(isinstance(d, int) and d >= 1 for d in unit)
            or dtype.kind not in "uif"):
        raise DataError(f"Zarr input {str(path)!r}{member} declares chunks {list(unit)} of {dtype} for shape "
                        f"{list(array.shape)}; expected positive chunk sizes of integers or floats")
    chunk_bytes = math.prod(unit) * dtype.itemsize
    if chunk_bytes > budgets.max_chunk_bytes:
        raise DataError(over(f"Zarr input {str(path)!r}{member} (chunks {list(unit)} of {dtype})", chunk_bytes,
                             "max_chunk_bytes", budgets.max_chunk_bytes, "bytes per chunk"))
    store.frames = _frames(array, dtype)
    return array, member


def _frames(array, dtype: np.dtype) -> tuple[str, int, int] | None:
    """(compressor, decoded bytes of one inner chunk, inner chunks per shard file or 0) when the compressor
    is Blosc or Zstd, whose frames declare their decoded size: the store checks it before zarr decodes."""
    codecs = getattr(array.metadata, "codecs", None)
    per_shard = 0
    if codecs is None:  # Zarr v2: one compressor
        compressor = getattr(array.metadata, "compressor", None)
        names = [getattr(compressor, "codec_id", "")]
    else:
        if codecs and type(codecs[0]).__name__ == "ShardingCodec":
            sharding = codecs[0]
            if getattr(sharding.index_location, "value", "") != "end":
                return None
            per_shard = math.prod(s // c for s, c in zip(array.shards, sharding.chunk_shape))
            codecs = sharding.codecs
        names = [type(c).__name__.removesuffix("Codec").lower() for c in codecs]
    kind = next((n for n in names if n in ("blosc", "zstd")), None)
    return None if kind is None else (kind, math.prod(array.chunks) * dtype.itemsize, per_shard)


def declared_size(frame: bytes, kind: str) -> int | None:
    """The decoded size a Blosc or Zstd frame declares in its header (None: it declares none, or is malformed)."""
    if kind == "blosc":
        return int.from_bytes(frame[4:8], "little") if len(frame) >= 16 else None
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    single, fcs_flag, dict_flag = descriptor >> 5 & 1, descriptor >> 6, descriptor & 3
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or len(frame) < at + width:
        return None
    return int.from_bytes(frame[at:at + width], "little") + (256 if width == 2 else 0)


def row_step(array, batch_size: int) -> int:
    """Rows per read: whole chunks (shards) along the rows, about batch_size of them, at least one chunk."""
    if array.ndim == 0:
        return 1
    unit = (array.shards or array.chunks)[0]
    return max(1, batch_size // unit) * unit


def read_rows(array, path: Path, step: int) -> Iterator[np.ndarray]:
    """The array's rows, step (a multiple of the chunk rows) at a time: every chunk decoded once."""
    count = int(array.shape[0])
    for i in range(0, count, step):
        try:
            yield np.asarray(array[i:i + step])
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataError(f"cannot read Zarr input {str(path)!r} at rows {i}..{min(i + step, count) - 1}: "
                            f"{' '.join(str(exc).split())[:300]}") from None


_STORE = None


def _store_class():
    """zarr's LocalStore, reading every key through paths.open_inside (defined once zarr is imported)."""
    global _STORE
    if _STORE is not None:
        return _STORE
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    class NoFollowStore(LocalStore):
        """Read-only; a symbolic link anywhere under the root is refused; an absent chunk raises unless accepted."""

        def __init__(self, root, fill_absent: bool = False, most: int = 1 << 62):
            super().__init__(root, read_only=True)
            self.fill_absent, self.most = fill_absent, most
            self.frames = None  # set by open_zarr: (compressor, inner chunk bytes, inner chunks per shard)

        async def get(self, key, prototype=None, byte_range=None):
            if not self._is_open:
                await self._open()
            data = await asyncio.to_thread(self._read, key, byte_range)
            if data is None:
                return None
            return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

        async def get_partial_values(self, prototype, key_ranges):
            return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

        def _read(self, key: str, byte_range) -> bytes | None:
            try:
                fd = open_inside(self.root, key, "Zarr key")
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                if key.rsplit("/", 1)[-1] in METADATA or self.fill_absent:
                    return None
                raise DataError(f"Zarr input {str(self.root)!r} lacks chunk {key!r}: absent chunks would read as "
                                "the store's fill value; pass `fill_absent=True` to accept that") from None
            with os.fdopen(fd, "rb") as f:
                size = os.fstat(fd).st_size
                if size > self.most:
                    raise DataError(over(f"Zarr input {str(self.root)!r} file {key!r}", size, "max_chunk_bytes",
                                         self.most, "bytes (with compression overhead)"))
                if byte_range is None:
                    data = f.read()
                else:
                    start = getattr(byte_range, "start", getattr(byte_range, "offset", None))
                    if start is None:
                        start = max(0, size - byte_range.suffix)
                    f.seek(start)
                    end = getattr(byte_range, "end", None)
                    data = f.read() if end is None else f.read(end - start)
            if self.frames is not None and key.rsplit("/", 1)[-1] not in METADATA:
                self._check_frames(key, data, byte_range)
            return data

        def _check_frames(self, key: str, data: bytes, byte_range) -> None:
            """Every compressed frame read must declare at most one inner chunk's bytes (checked before decoding)."""
            kind, limit, per_shard = self.frames
            if per_shard and byte_range is not None and len(data) == 16 * per_shard + 4:
                return  # a shard's index (offsets and sizes, checksummed by zarr)
            if per_shard and byte_range is None:  # a whole shard: its index at the end locates each frame
                index = np.frombuffer(data[-(16 * per_shard + 4):-4], "<u8").reshape(-1, 2)
                frames = [data[o:o + n] for o, n in index if o != 2**64 - 1 and o + n <= len(data)]
            else:
                frames = [data]
            for frame in frames:
                size = declared_size(frame, kind)
                if size is None or size > limit:
                    raise DataError(f"Zarr input {str(self.root)!r} chunk {key!r} holds a {kind} frame that "
                                    f"declares {'no' if size is None else f'{size:,}'} decoded bytes; one chunk is "
                                    f"{limit:,} (refused before decoding)")

    _STORE = NoFollowStore
    return _STORE


__all__ = ["open_zarr", "row_step", "read_rows", "declared", "check_rows", "METADATA"]
