"""Whole shards of a Zarr v3 array, encoded here and written as one file each, byte for byte as zarr writes them.

Why not `array[a:b] = x`: on the reference model zarr's write path (an asyncio task and a
thread hand-off per chunk, the chunk filled with the fill value then copied into, the encoded
chunks copied into one shard buffer) cost about as much CPU as the Blosc compression itself.
Here each chunk is compressed straight from the caller's array, on a thread pool, and the shard
is written with one writev. Only the layout that ZarrWriter creates is written this way (the sharding codec
with the index at the end, inner codecs bytes(little endian) + blosc, index codecs bytes +
crc32c: see the sharding spec, https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed/);
tests compare the files with zarr's own.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

NO_CHUNK = np.uint64(2**64 - 1)  # the index's offset and length of a chunk that is not stored
SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}  # numcodecs.Blosc's constants


class ShardFiles:
    """Writes rows [i * shard_rows, (i + 1) * shard_rows) of one sharded array (the last shard may be short).

    Args:
        folder: the array's folder in a local store.
        metadata: the array's zarr metadata (for chunk keys).
        rows, shard_rows, chunk_rows: the array's length, and its shard and chunk lengths along axis 0.
        codec: ZARR_CODEC's Blosc settings.
        pool: the Executor that compresses the chunks (Blosc releases the GIL, so they run in parallel).
    """

    def __init__(self, folder: Path, metadata, rows: int, shard_rows: int, chunk_rows: int, codec: dict, pool):
        import google_crc32c  # zarr's own dependency for the crc32c codec
        import numcodecs

        self.folder, self.metadata = Path(folder), metadata
        self.rows, self.shard_rows, self.chunk_rows = rows, shard_rows, chunk_rows
        self.blosc = numcodecs.Blosc(cname=codec["cname"], clevel=codec["clevel"], shuffle=SHUFFLES[codec["shuffle"]])
        self.crc32c = google_crc32c.value
        self.pool = pool

    def fits(self, start: int, count: int) -> bool:
        """Whether rows start .. start+count are one whole shard (or the array's last, short one)."""
        return start % self.shard_rows == 0 and (count == self.shard_rows or start + count == self.rows)

    def write(self, start: int, array: np.ndarray) -> Callable[[], None]:
        """Start compressing one shard (fits(start, len(array)) must hold) on the pool.

        Returns:
            the function that waits for its chunks and writes the file (in the caller's thread).
        """
        little = array.dtype.newbyteorder("<")
        chunks = []
        for row in range(0, len(array), self.chunk_rows):
            chunk = np.ascontiguousarray(array[row:row + self.chunk_rows], dtype=little)  # a view if it already is
            if len(chunk) < self.chunk_rows:  # the array's last chunk: zarr stores it padded with the fill value
                chunk = np.concatenate([chunk, np.zeros((self.chunk_rows - len(chunk), *chunk.shape[1:]), little)])
            chunks.append(chunk)
        encoded = [self.pool.submit(self.blosc.encode, chunk) for chunk in chunks]
        path = self.folder / self.metadata.encode_chunk_key((start // self.shard_rows,) + (0,) * (array.ndim - 1))
        return lambda: self._write_file(path, [e.result() for e in encoded])

    def _write_file(self, path: Path, parts: list) -> None:
        index = np.full((self.shard_rows // self.chunk_rows, 2), NO_CHUNK, "<u8")
        sizes = np.array([len(p) for p in parts], np.uint64)
        index[:len(parts), 0], index[:len(parts), 1] = np.cumsum(sizes) - sizes, sizes
        parts += [index.tobytes(), np.uint32(self.crc32c(index.tobytes())).astype("<u4").tobytes()]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, parts)
        finally:
            os.close(fd)


def _write_all(fd: int, parts: list) -> None:
    """writev until every byte is written (a write may stop short, e.g. on a signal or a large total)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        written = os.writev(fd, views[:1024])  # IOV_MAX
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
