"""Zarr inputs of `run` and `stats`, read as untrusted files: declarations checked first, chunks read once.

- What the store declares (shape, dtype, chunk shape) is checked against the model and the Budgets
  before any chunk is read (declared(): a zero-byte view of the declared shape goes through the same
  checks as real images).
- No compressed frame may decode to more than one chunk: Blosc, Zstd and LZ4 frames are checked from the size
  their header declares; gzip, zlib, bz2 and lzma frames declare none, so the store counts what they decode, a
  piece at a time, and stops once past one chunk (decodes_within). A store with any other codec is refused.
- Reads are chunk-aligned: each batch covers whole chunks (or shards) along the rows, so each chunk is
  decoded once, however its size compares with the batch size.
- Chunk files are opened relative to the store's descriptor without following symbolic links
  (paths.open_inside) and read from that descriptor; an absent chunk is an error, not silent fill
  values, unless the caller accepts the declared fill value (`fill_absent`).
"""
from __future__ import annotations

import asyncio
import bz2
import lzma
import math
import os
import zlib
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
    store.frames = _frames(array, dtype, f"{str(path)!r}{member}")
    return array, member


# What may stand between a chunk's stored bytes and its array, by the name the store's metadata gives it. Every
# compressor is either checked from the size its frame declares (DECLARED) or decoded a piece at a time and
# stopped once past one chunk (CAPPED); any other codec could inflate unchecked, so the store is refused.
DECLARED = ("blosc", "zstd", "lz4")  # the frame header says the decoded size (lz4: numcodecs' 4-byte prefix)
CAPPED = ("gzip", "zlib", "bz2", "lzma")  # no declared size: decodes_within() counts and stops
PLAIN = ("bytes", "transpose", "crc32c")  # the same bytes, reordered, or a 4-byte checksum after them
SUPPORTED = ", ".join(DECLARED + CAPPED + PLAIN + ("sharding_indexed",))


def _codec_names(array) -> tuple[list[str], int, str]:
    """(codec names in encoding order, inner chunks per shard file or 0, the shard index's location)."""
    codecs = getattr(array.metadata, "codecs", None)
    if codecs is None:  # Zarr v2: filters, then one compressor
        compressor = getattr(array.metadata, "compressor", None)
        steps = [*(array.metadata.filters or ()), *([compressor] if compressor is not None else [])]
        return [str(getattr(c, "codec_id", type(c).__name__)) for c in steps], 0, "end"
    names = [str(c.to_dict().get("name", type(c).__name__)) for c in codecs]
    if not codecs or names[0] != "sharding_indexed" or len(codecs) > 1:
        return names, 0, "end"
    sharding = codecs[0]
    per_shard = math.prod(s // c for s, c in zip(array.shards, sharding.chunk_shape))
    index = [str(c.to_dict().get("name", "")) for c in sharding.index_codecs]
    if index != ["bytes", "crc32c"]:  # any other index layout cannot be located without decoding it
        return ["sharding_indexed index " + "+".join(index)], 0, "end"
    return ([str(c.to_dict().get("name", type(c).__name__)) for c in sharding.codecs], per_shard,
            str(getattr(sharding.index_location, "value", sharding.index_location)))


def _frames(array, dtype: np.dtype, where: str) -> tuple[str, int, int, str] | None:
    """(compressor, most decoded bytes of one inner chunk's frame, inner chunks per shard file or 0, the shard
    index's location), None without a compressor. The store checks every frame it reads against it.

    Raises:
        DataError: a codec that is neither size-declaring nor capped, or more than one compressor.
    """
    names, per_shard, location = _codec_names(array)
    kinds = [n.removeprefix("numcodecs.") for n in names]
    for name, kind in zip(names, kinds):
        if kind not in DECLARED + CAPPED + PLAIN or (kind in PLAIN and name != kind):
            raise DataError(f"Zarr input {where} uses codec {name!r}, whose decoded size can be neither checked "
                            f"nor capped before decoding; supported: {SUPPORTED}")
    compressors = [k for k in kinds if k in DECLARED + CAPPED]
    if len(compressors) > 1:
        raise DataError(f"Zarr input {where} stacks compressors {compressors}; supported: one of them")
    if not compressors:
        return None
    # Each crc32c the compressor wraps adds 4 bytes to what it decodes to.
    wrapped = kinds[:kinds.index(compressors[0])].count("crc32c")
    return compressors[0], math.prod(array.chunks) * dtype.itemsize + 4 * wrapped, per_shard, location


def declared_size(frame: bytes, kind: str) -> int | None:
    """The decoded size a Blosc, Zstd or (numcodecs) LZ4 frame declares in its header (None: it declares none,
    or is malformed)."""
    if kind == "blosc":
        return int.from_bytes(frame[4:8], "little") if len(frame) >= 16 else None
    if kind == "lz4":
        return int.from_bytes(frame[:4], "little") if len(frame) >= 4 else None
    if len(frame) < 6 or frame[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = frame[4]
    single, fcs_flag, dict_flag = descriptor >> 5 & 1, descriptor >> 6, descriptor & 3
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
    width = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or len(frame) < at + width:
        return None
    return int.from_bytes(frame[at:at + width], "little") + (256 if width == 2 else 0)


def decodes_within(frame: bytes, kind: str, cap: int) -> int | None:
    """How many bytes a gzip, zlib, bz2 or lzma frame decodes to, counted a piece at a time and stopped once past
    cap (so at most cap + one piece: memory stays near a piece, whatever the frame inflates to). Concatenated
    gzip, bz2 and lzma streams are counted on, as numcodecs' decoders read them (gzip's zero padding skipped);
    counting stops at later bytes that do not decode, where those decoders stop or fail too. None: the first
    stream does not decode here (a corrupt frame, or an lzma codec configured for raw streams), so it is unchecked.
    """
    total, piece = 0, max(1 << 20, cap // 8)
    data, first = frame, True
    while data and total <= cap:
        try:
            if kind in ("gzip", "zlib"):
                decoder = zlib.decompressobj(31 if kind == "gzip" else 15)
                total += len(decoder.decompress(data, piece))
                while not decoder.eof and total <= cap:
                    out = decoder.decompress(decoder.unconsumed_tail, piece)
                    if not out:
                        break
                    total += len(out)
            else:
                decoder = bz2.BZ2Decompressor() if kind == "bz2" else lzma.LZMADecompressor()
                total += len(decoder.decompress(data, piece))
                while not decoder.eof and not decoder.needs_input and total <= cap:
                    total += len(decoder.decompress(b"", piece))
        except (zlib.error, OSError, EOFError, lzma.LZMAError):
            if first:
                return None
            break
        if kind == "zlib" or not decoder.eof:
            break
        first = False
        data = decoder.unused_data.lstrip(b"\0") if kind == "gzip" else decoder.unused_data
    return total


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
            self.frames = None  # set by open_zarr: (compressor, inner chunk bytes, chunks per shard, index at)

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
            """Every compressed frame read decodes to at most one inner chunk's bytes: Blosc, Zstd and LZ4 frames
            by the size they declare, gzip, zlib, bz2 and lzma ones counted as decoded, stopping past it."""
            kind, limit, per_shard, location = self.frames
            index_bytes = 16 * per_shard + 4
            if per_shard and byte_range is not None and len(data) == index_bytes:
                return  # a shard's index (offsets and sizes, checksummed by zarr)
            if per_shard and byte_range is None:  # a whole shard: its index locates each frame
                index = data[:index_bytes] if location == "start" else data[-index_bytes:]
                pairs = np.frombuffer(index[:-4], "<u8").reshape(-1, 2)
                frames = [data[o:o + n] for o, n in pairs if o != 2**64 - 1 and o + n <= len(data)]
            else:
                frames = [data]
            for frame in frames:
                if kind in CAPPED:
                    size = decodes_within(frame, kind, limit)
                    if size is None:
                        raise DataError(f"Zarr input {str(self.root)!r} chunk {key!r} holds a {kind} frame that "
                                        f"does not decode as a {kind} stream, so its size cannot be capped")
                    if size > limit:
                        raise DataError(self._too_much(key, f"a {kind} frame that decodes past {limit:,} bytes",
                                                       limit, "decoding stopped there"))
                    continue
                size = declared_size(frame, kind)
                if size is None or size > limit:
                    raise DataError(self._too_much(
                        key, f"a {kind} frame that declares {'no' if size is None else f'{size:,}'} decoded bytes",
                        limit, "refused before decoding"))

        def _too_much(self, key: str, what: str, limit: int, how: str) -> str:
            return (f"Zarr input {str(self.root)!r} chunk {key!r} holds {what}; one chunk is {limit:,} "
                    f"(within the budget `max_chunk_bytes`; {how})")

    _STORE = NoFollowStore
    return _STORE


__all__ = ["open_zarr", "row_step", "read_rows", "declared", "check_rows", "METADATA"]
