"""Inputs of `run` and `stats`: files -> numbered batches of raw images, each row with its source name.

Accepted: .npz (read whole), .npy (memory-mapped), a Zarr array or group (read one batch at a
time; needs the [store] extra), image files, and folders of image files. Quoted globs expand.
"""
from __future__ import annotations

import glob
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from runtime.artifacts.budgets import DEFAULT_BUDGETS, Budgets, over
from runtime.artifacts.manifest import InputSpec
from runtime.errors import DataError, InputError
from runtime.jobs.zarr_input import check_rows, declared, open_zarr, read_rows, row_step
from runtime.preprocess import as_nhwc, is_batch, to_batch

ARRAY_SUFFIXES = (".npz", ".npy")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
DEFAULT_KEY = "x_test"  # Keras' mnist.npz and the shipped digits name their test images so
GLOB_CHARS = "*?["


def is_zarr(path: Path) -> bool:
    """A Zarr v3 (zarr.json) or v2 (.zarray / .zgroup) array or group folder."""
    return path.is_dir() and any((path / m).is_file() for m in ("zarr.json", ".zarray", ".zgroup"))


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Input arguments -> existing inputs, in order: files, Zarr folders, and the image files of other folders.

    Quoted globs and folders are expanded in sorted order.

    Raises:
        DataError: a path that does not exist, a glob matching nothing, or a folder without image files.
    """
    paths: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if any(ch in pattern for ch in GLOB_CHARS) and not path.exists():
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise DataError(f"no input file matches {pattern!r}")
            paths += matches
        elif is_zarr(path):
            paths.append(path)
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise DataError(f"input folder {pattern!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}) "
                                "and is not a Zarr array")
            paths += images
        elif not path.is_file():
            raise DataError(f"input file {pattern!r} not found")
        else:
            paths.append(path)
    return paths


@dataclass
class Source:
    """One input: how many images it holds, a lazy iterator of images or batches, and each row's name."""

    path: Path
    count: int
    items: Callable[[], Iterator[np.ndarray]]
    row_name: Callable[[int], str]
    is_image_file: bool = False


def open_source(path: Path, spec: InputSpec, batch_size: int, key: str | None = None, invert: bool = False,
                budgets: Budgets = DEFAULT_BUDGETS) -> Source:
    """An input as a Source: .npz / .npy / Zarr arrays (one image or a batch), else an image file.

    What an array declares (shape, dtype, rows, chunk and member sizes) is checked against the model
    and `budgets` before any of its data is read.

    Raises:
        DataError: unreadable array, a missing or ambiguous key, an input over a budget.
        InputError: an array whose declared shape or dtype the model cannot take.
    """
    check_batch_size(batch_size)
    if not is_zarr(path) and path.suffix.lower() not in ARRAY_SUFFIXES:
        from runtime.images import read_image  # Pillow, only when image files are given

        return Source(path, 1, lambda: iter([read_image(path, spec, invert, budgets.max_pixels)]),
                      lambda i: str(path), True)
    array, member = read_array(path, key, budgets, spec)
    as_nhwc(declared(array.shape, array.dtype), spec)  # the declared shape and dtype, checked without reading
    if not is_batch(declared(array.shape, array.dtype), spec):
        return Source(path, 1, lambda: iter([np.asarray(array[...])]), lambda i: f"{path}{member}")
    count = int(array.shape[0])
    check_rows(f"input {str(path)!r}", count, budgets)
    if is_zarr(path):
        step = row_step(array, max(int(batch_size), 1))
        return Source(path, count, lambda: read_rows(array, path, step), lambda i: f"{path}{member}[{i}]")
    step = max(int(batch_size), 1)  # slices: a memory-mapped array is read one batch at a time
    return Source(path, count, lambda: (np.asarray(array[i:i + step]) for i in range(0, count, step)),
                  lambda i: f"{path}{member}[{i}]")


def read_array(path: Path, key: str | None = None, budgets: Budgets = DEFAULT_BUDGETS, spec: InputSpec | None = None):
    """The image array of an input and its member suffix for row names (":key" or "").

    .npy files are memory-mapped, Zarr arrays opened lazily, .npz arrays read whole (after their
    declared size is checked against `max_member_bytes`). In an .npz or a Zarr group the array is
    `key`, else "x_test" if present, else the only array. With `spec`, an .npz member's declared shape
    and dtype are checked against it before it is inflated.

    Raises:
        DataError: unreadable file, pickled objects, a missing or ambiguous key, a member over its budget.
    """
    if is_zarr(path):
        return open_zarr(path, key, budgets, _pick_key)
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), ""
        with np.load(path, allow_pickle=False) as archive:
            name = _pick_key(path, list(archive.files), key)
            _check_member(path, archive, name, spec, budgets)
            return archive[name], f":{name}"
    except InputError:  # a declared shape or dtype the model cannot take: said as such
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "pickle" in reason or "object" in reason.lower():  # numpy's advice to allow pickles is not ours
            reason = "not a numeric array (Python objects, or not .npy/.npz data; pickles are never loaded)"
        raise DataError(f"cannot read array file {str(path)!r}: {reason}") from None


def _check_member(path: Path, archive, name: str, spec: InputSpec | None, budgets: Budgets) -> None:
    """An .npz member's declared size (zip entry), shape and dtype (.npy header), checked before it is inflated."""
    info = archive.zip.getinfo(f"{name}.npy")
    if info.file_size > budgets.max_member_bytes:
        raise DataError(over(f"{str(path)!r} member {name!r}", info.file_size, "max_member_bytes",
                             budgets.max_member_bytes, "bytes"))
    if spec is None:
        return
    with archive.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)(member)
    as_nhwc(declared(shape, dtype), spec)  # InputError naming the declared shape, nothing inflated yet


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise DataError(f"{str(path)!r} has no array {key!r}; its arrays: {keys}")
        return key
    if DEFAULT_KEY in keys:
        return DEFAULT_KEY
    if len(keys) == 1:
        return keys[0]
    raise DataError(f"{str(path)!r} holds arrays {keys} and none is named {DEFAULT_KEY!r}; choose one with `key`")


@dataclass
class Batch:
    """Rows start .. start+len(images) of the input: raw images [n, H, W, C] as given, and their names."""

    start: int
    images: np.ndarray
    names: list[str]


def batches(sources: Iterable[Source], spec: InputSpec, batch_size: int) -> Iterator[Batch]:
    """Regroup the images of several sources into numbered batches of batch_size rows (the last may be short).

    Pixels stay as given (uint8, or preprocessed float32); when one batch would mix the two,
    its pixels are preprocessed to float32 so that the batch has one dtype.

    Raises:
        InputError: an image of the wrong shape or dtype (values are checked when the model runs).
    """
    check_batch_size(batch_size)
    pending: list[np.ndarray] = []
    names: list[str] = []
    start = count = 0
    for source in sources:
        row = 0
        for item in source.items():
            part = as_nhwc(item, spec)
            while len(part):
                take = min(batch_size - count, len(part))
                pending.append(part[:take])
                names += [source.row_name(row + i) for i in range(take)]
                row, count, part = row + take, count + take, part[take:]
                if count == batch_size:
                    yield Batch(start, _join(pending, spec), names)
                    start, pending, names, count = start + count, [], [], 0
    if count:
        yield Batch(start, _join(pending, spec), names)


def check_batch_size(batch_size) -> None:
    """Raises InputError unless batch_size is an integer of at least 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an integer of at least 1; got {batch_size!r}")


def _join(parts: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    if len({p.dtype for p in parts}) > 1:
        parts = [to_batch(p, spec) for p in parts]
    return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)


__all__ = ["expand_inputs", "open_source", "read_array", "batches", "Source", "Batch", "is_zarr",
           "ARRAY_SUFFIXES", "IMAGE_SUFFIXES", "DEFAULT_KEY"]
