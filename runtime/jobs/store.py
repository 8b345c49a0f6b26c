"""Writers of `run`: one array per output, batch by batch, into an .npz (small jobs) or a Zarr v3 store.

Both build beside the target and move it into place on commit: until then, and after any
failure or interrupt, the target is as it was and the temporaries are removed.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zipfile
from collections import deque
from dataclasses import asdict
from pathlib import Path

import numpy as np

from runtime.artifacts.atomic import atomic_write, build_dir, replace_dir
from runtime.artifacts.hashing import MANIFEST, sha256_file
from runtime.artifacts.manifest import Manifest
from runtime.artifacts.paths import confine, safe_name
from runtime.errors import DataError, InputError, TargetChanged

SUFFIXES = (".npz", ".zarr")
# Blosc with LZ4 at level 6, no shuffle: on ReLU maps (70-80% exact zeros) it measured 0.295x the raw
# float32 size over the 60,000 MNIST digits (level 9: 0.285x, at about 20% more CPU; Zstd level 1: 0.23x
# at about twice the CPU); shuffling only made both larger. benchmarks/dataset_scale.py measures the alternatives.
ZARR_CODEC = {"cname": "lz4", "clevel": 6, "shuffle": "noshuffle"}
SOURCES = "sources"  # .npz member / Zarr attribute naming the source file of each row (image inputs)
MAX_CHUNK_ROWS = 32  # one image's maps read by decompressing at most 32 images' worth


DTYPES = ("float32", "float16")  # what `run` stores: the model's float32, or half of its bytes


def stored_dtype(name: str) -> np.dtype:
    """The dtype a store keeps maps in.

    Raises:
        InputError: not one of DTYPES.
    """
    if name not in DTYPES:
        raise InputError(f"`dtype` must be one of {list(DTYPES)}; got {name!r}")
    return np.dtype(name)


def read_maps(path: str | os.PathLike, name: str, rows=slice(None), dtype=np.float32) -> np.ndarray:
    """Rows of output `name` from an .npz or Zarr store written by `run`, as `dtype` (None: as stored, e.g.
    float16; the store's "dtype" attribute says which).

    Raises:
        DataError: no such store or output.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".zarr":
            import zarr

            array = zarr.open_group(str(path), mode="r")[safe_name(name)][rows]
        else:
            with np.load(path) as f:
                array = f[safe_name(name)][rows]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read output {name!r} from {str(path)!r}: {exc}") from None
    return array if dtype is None else array.astype(dtype, copy=False)


def cannot_write(path: Path, exc: OSError, what: str = "") -> DataError:
    """The DataError for an OSError met while writing path (no traceback: a full disk is not a bug)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"cannot write {str(path)!r}: " + (f"{what} ({reason})" if what else reason))


def check_out(path: Path) -> Path:
    """`out`, checked before anything is loaded: an .npz file or .zarr store in a folder that accepts new files.

    An existing .zarr target must be a Zarr store (it is replaced on success); nothing else is replaced.

    Raises:
        DataError: a wrong suffix, a missing folder, a folder that refuses files, or a target of the wrong kind.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        if path.is_dir():
            raise DataError(f"`out` {str(path)!r} is a folder; expected the path of an .npz file or a .zarr store")
        raise DataError(f"`out` {str(path)!r} must end in .npz (one archive) or .zarr (a chunked Zarr v3 store)")
    if suffix == ".npz" and path.is_dir():
        raise DataError(f"`out` {str(path)!r} is a folder; expected the path of an .npz file to write")
    if suffix == ".zarr" and path.exists() and not _is_zarr_store(path):
        raise DataError(f"`out` {str(path)!r} exists and is not a Zarr store; refusing to replace it")
    if not path.parent.is_dir():
        raise DataError(f"`out` {str(path)!r}: folder {str(path.parent)!r} does not exist")
    try:  # os.access alone passes for root where creating still fails (read-only mounts, /proc)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise cannot_write(path, exc, f"folder {str(path.parent)!r} does not accept new files") from None
    return path


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / "zarr.json").is_file()


def summary(manifest: Manifest, folder: Path, names: list[str]) -> dict:
    """What a store records about the model that wrote it: the manifest's input, the outputs written."""
    return {
        "model": manifest.source_model.get("name", ""),
        "artifacts": str(folder),
        "artifacts_sha256": sha256_file(Path(folder) / MANIFEST),
        "input": {"name": manifest.input.name, "shape": list(manifest.input.shape), "layout": manifest.input.layout,
                  "preprocessing": asdict(manifest.input.preprocessing)},
        "outputs": {n: {k: v for k, v in asdict(manifest.output(n)).items() if k != "name"} for n in names},
    }


def open_writer(path: Path, rows: int, batch_size: int = 256, compress: bool = False, attrs: dict | None = None):
    """An NpzWriter or a ZarrWriter, by the suffix of path (checked by check_out)."""
    if path.suffix.lower() == ".zarr":
        return ZarrWriter(path, rows, chunk_rows(batch_size), attrs or {}, shard_rows=batch_size)
    return NpzWriter(path, rows, compress)


def chunk_rows(batch_size: int) -> int:
    """The largest divisor of batch_size up to MAX_CHUNK_ROWS: each batch fills whole chunks (no re-reads)."""
    return max(d for d in range(1, min(batch_size, MAX_CHUNK_ROWS) + 1) if batch_size % d == 0)


class _Writer:
    """What both writers share: a temporary build beside the target, per-output row counts, cleanup."""

    def __init__(self, path: Path, rows: int):
        self.path, self.expected = Path(path), rows
        self.counts: dict[str, int] = {}
        self.specs: dict[str, tuple] = {}  # name -> (shape of one row, dtype)
        try:
            self.tmp = build_dir(self.path)
        except OSError as exc:
            raise cannot_write(self.path, exc) from None

    @property
    def rows(self) -> int:
        return min(self.counts.values(), default=0)

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            if name not in self.specs:
                self.specs[name], self.counts[name] = (array.shape[1:], array.dtype), 0
                self._open(safe_name(name), array)
            row_shape, dtype = self.specs[name]
            if array.shape[1:] != row_shape and array.dtype == dtype:  # inputs of several sizes (free dimensions)
                raise InputError(f"output {name!r} has rows of {list(row_shape)} and then {list(array.shape[1:])}: "
                                 "one file holds outputs of one input size; write other sizes to another `out`")
            if array.dtype != dtype:  # a backend bug, not a user error
                raise RuntimeError(f"output {name!r} changed from {dtype} to {array.dtype} between batches")
            if len(array):
                try:
                    self._write(name, array)
                except OSError as exc:  # e.g. the disk is full
                    raise cannot_write(self.path, exc) from None
            self.counts[name] += len(array)

    def _check_complete(self) -> None:
        wrong = {n: c for n, c in self.counts.items() if c != self.expected}
        if wrong:  # would leave arrays that lie about their length
            raise RuntimeError(f"expected {self.expected} rows per output, wrote {wrong}")

    def shapes(self) -> dict[str, tuple]:
        return {name: (self.expected, *row) for name, (row, _) in self.specs.items()}

    def _open(self, name: str, first: np.ndarray) -> None:
        raise NotImplementedError

    def _write(self, name: str, array: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NpzWriter(_Writer):
    """Stream outputs into temporary .npy files (headers say `rows` rows), zip them on commit.

    The disk needs about twice the output size while this runs.
    """

    def __init__(self, path: Path, rows: int, compress: bool = False):
        super().__init__(path, rows)
        self.compress = compress
        self.files: dict[str, object] = {}

    def _open(self, name: str, first: np.ndarray) -> None:
        try:
            self.files[name] = f = open(confine(self.tmp, f"{name}.npy", "output file"), "wb")
            header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
                      "shape": (self.expected, *first.shape[1:])}
            np.lib.format.write_array_header_1_0(f, header)
        except OSError as exc:
            raise cannot_write(self.path, exc) from None

    def _write(self, name: str, array: np.ndarray) -> None:
        self.files[name].write(memoryview(np.ascontiguousarray(array)).cast("B"))  # no copy when contiguous

    def commit(self, sources: list[str] | None = None) -> dict[str, tuple]:
        """Zip the outputs, and `sources` (one name per row) as a "sources" member, into the .npz atomically.

        Returns:
            output name -> array shape.
        """
        try:  # the last buffered bytes are written here: a full disk may show only now
            for f in self.files.values():
                f.close()
        except OSError as exc:
            raise cannot_write(self.path, exc) from None
        self._check_complete()
        extra = {} if sources is None else {SOURCES: np.array(sources, dtype=str)}
        if SOURCES in extra and SOURCES in self.files:
            raise DataError(f"an output is named {SOURCES!r}, like the member that names each row's source file; "
                            "leave it out with `outputs`")
        method = zipfile.ZIP_DEFLATED if self.compress else zipfile.ZIP_STORED
        # One file, so not replace_dir: os.replace swaps it in atomically and replaces only what check_out
        # accepted, a file. A folder put at the path meanwhile makes it fail (EISDIR) and stays intact; a
        # symbolic link is replaced itself, never what it points to; nothing is moved aside, so nothing to restore.
        try:
            for name, array in extra.items():
                np.save(confine(self.tmp, f"{safe_name(name)}.npy", "output file"), array, allow_pickle=False)
            with atomic_write(self.path) as f, zipfile.ZipFile(f, "w", method, allowZip64=True) as archive:
                for name in [*self.files, *extra]:  # np.savez's layout: one NAME.npy member per array
                    archive.write(self.tmp / f"{name}.npy", arcname=f"{name}.npy")
        except OSError as exc:  # e.g. the disk is full, or the folder stopped accepting files
            raise cannot_write(self.path, exc) from None
        return self.shapes()

    def close(self) -> None:
        for f in self.files.values():
            try:
                f.close()
            except OSError:  # the buffered tail of a failed write (a full disk): the folder goes anyway
                pass
        super().close()


class ZarrWriter(_Writer):
    """A Zarr v3 store: one array per output named like it, chunked along the batch, Blosc-compressed.

    With shard_rows, chunks are grouped in shards of that many rows (one file per shard): zarr's
    cost per file was larger than the compression of a 32-image chunk, and readers still
    decompress one chunk to read one image. The store is built in a hidden folder beside the target
    with attrs "complete": false, and renamed into place by commit(), which sets "complete": true; an
    existing store at the target is replaced then.
    """

    def __init__(self, path: Path, rows: int, chunk_rows: int, attrs: dict, shard_rows: int | None = None):
        try:
            import zarr
        except ImportError:
            raise DataError(f"writing {str(path)!r} needs zarr: pip install 'featuremaps[store]' "
                            "(or write an .npz)") from None
        super().__init__(path, rows)
        self.chunk_rows = max(1, int(chunk_rows))
        self.shard_rows = shard_rows if shard_rows and shard_rows % self.chunk_rows == 0 else None
        self.arrays: dict[str, object] = {}
        self.shards: dict[str, object] = {}  # name -> ShardFiles: whole shards bypass zarr's write path
        self.pool = None  # compresses the chunks of a shard on every core (see _open)
        self.pending: deque = deque()  # functions that finish writing a shard (see _write)
        try:
            self.group = zarr.open_group(store=str(self.tmp), mode="w", zarr_format=3)
            self.group.attrs.update({**attrs, "images": rows, "complete": False})
        except BaseException as exc:  # Ctrl-C and SIGTERM too: `with` cleans up only once __init__ has returned
            self.close()
            if isinstance(exc, OSError):
                raise cannot_write(self.path, exc) from None
            raise

    def _open(self, name: str, first: np.ndarray) -> None:
        from zarr.codecs import BloscCodec

        confine(self.tmp, name, "output name")
        self.arrays[name] = self.group.create_array(
            name, shape=(self.expected, *first.shape[1:]), chunks=(self.chunk_rows, *first.shape[1:]),
            shards=(self.shard_rows, *first.shape[1:]) if self.shard_rows else None,
            dtype=first.dtype, compressors=BloscCodec(**ZARR_CODEC), fill_value=0,
            config={"write_empty_chunks": True})  # zarr's all-zero check per chunk cost more than compressing
        if self.shard_rows:
            from concurrent.futures import ThreadPoolExecutor

            from runtime.jobs.pipeline import usable_cores
            from runtime.jobs.shards import ShardFiles

            # One writer thread compressing while the model computes on the other core(s) left a core
            # idle half the time: compression costs more CPU per image than the model's compute.
            if self.pool is None:
                self.pool = ThreadPoolExecutor(usable_cores(), thread_name_prefix="featuremaps-blosc")
            self.shards[name] = ShardFiles(self.tmp / name, self.arrays[name].metadata, self.expected,
                                           self.shard_rows, self.chunk_rows, ZARR_CODEC, self.pool)

    def _write(self, name: str, array: np.ndarray) -> None:
        start = self.counts[name]
        shards = self.shards.get(name)
        if shards is not None and shards.fits(start, len(array)):  # always, for batches of shard_rows
            self.pending.append(shards.write(start, array))
            # One batch of shards in flight: its chunks compress on the pool while the previous batch's
            # files are written here.
            while len(self.pending) > len(self.shards):
                self.pending.popleft()()
        else:
            self.arrays[name][start:start + len(array)] = array

    def commit(self, sources: list[str] | None = None) -> dict[str, tuple]:
        """Mark the store complete (attrs "sources": one name per row, if given) and move it into place.

        Returns:
            output name -> array shape.
        """
        self._check_complete()

        def still_a_store(old: Path) -> None:  # checked again once moved aside: only a Zarr store is replaced
            if not _is_zarr_store(old):
                raise DataError(f"{str(self.path)!r} is no longer a Zarr store (another program replaced it while "
                                "the outputs were written); left it as it is")

        try:
            while self.pending:
                self.pending.popleft()()
            self.group.attrs.update({**({SOURCES: list(sources)} if sources is not None else {}), "complete": True})
            replace_dir(self.tmp, self.path, replaceable=still_a_store)
        except OSError as exc:
            raise cannot_write(self.path, exc) from None
        except TargetChanged as exc:
            raise DataError(str(exc)) from None
        return self.shapes()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # before the temporary folder goes
        _settle_zarr()
        super().close()


def _settle_zarr() -> None:
    """Wait for zarr's in-flight I/O: an interrupt stops the caller waiting for zarr (e.g. creating an
    array), not zarr's own event-loop thread, which then wrote zarr.json into a removed folder again."""
    import asyncio

    from zarr.core.sync import sync

    async def others() -> None:
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*pending, return_exceptions=True)

    sync(others())


__all__ = ["check_out", "open_writer", "read_maps", "stored_dtype", "DTYPES", "summary", "chunk_rows", "NpzWriter",
           "ZarrWriter", "cannot_write",
           "ZARR_CODEC"]
