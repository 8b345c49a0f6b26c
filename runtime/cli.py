"""`python -m runtime`: inspect exported artifacts (`info`) and extract feature maps (`run`).

    python -m runtime info ARTIFACTS [--backend onnx|tf]
    python -m runtime run ARTIFACTS --input FILE [FILE ...] --out acts.npz
        [--key NAME] [--backend onnx|tf] [--device cpu|gpu|auto] [--outputs a,b] [--batch-size N]

Errors (project errors and bad arguments) are one line on stderr starting with "error:",
exit code 2, no traceback. Nothing here imports TensorFlow unless the TF backend is used
(or, for `info`, probed).
"""
from __future__ import annotations

import argparse
import glob
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TextIO

import numpy as np

from .api import DEVICES, load
from .atomic import atomic_write
from .backends import BACKENDS, installed_backends, runner_class
from .errors import ArgumentParser, DataError
from .manifest import InputSpec, Manifest, read_manifest
from .preprocess import is_batch

ARRAY_SUFFIXES = (".npz", ".npy")
DEFAULT_KEY = "x_test"  # Keras' mnist.npz and the shipped digits name their test images so
GLOB_CHARS = "*?["


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime", description="Inspect exported artifacts and extract their feature maps.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,run}")
    backends = sorted(BACKENDS)

    info = sub.add_parser("info", help="describe an artifacts folder and the backends and devices available here",
                          description="Describe an artifacts folder (checking its sha256s) and the backends here.")
    info.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    info.add_argument("--backend", choices=backends,
                      help="probe only this backend's devices (default: every installed one; probing tf imports TensorFlow)")
    info.set_defaults(func=cmd_info)

    run = sub.add_parser("run", help="extract feature maps of many images into an .npz",
                         description="Extract feature maps of many images into an .npz holding one array per output.")
    run.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    run.add_argument("--input", required=True, nargs="+", action="extend", metavar="FILE",
                     help="an .npz or .npy array of images, or image files (PNG, JPEG, ...); "
                          "repeatable; quoted globs such as 'digits/*.png' are expanded")
    run.add_argument("--out", required=True, type=Path, help="the .npz to write (atomically)")
    run.add_argument("--key", help=f"array to read from .npz inputs (default: {DEFAULT_KEY!r}, else the only array)")
    run.add_argument("--backend", choices=backends, default="onnx", help="default: onnx")
    run.add_argument("--device", choices=DEVICES, default="cpu", help="default: cpu; gpu is an error where none is usable")
    run.add_argument("--outputs", type=_names, help="comma-separated output names (default: all)")
    run.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    run.add_argument("--invert", action="store_true", help="invert image files (for dark digits on a light background)")
    run.add_argument("--compress", action="store_true", help="deflate the .npz (slower; ReLU maps shrink a lot)")
    run.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    run.set_defaults(func=cmd_run)
    return p.parse_args(argv)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return args.func(args)


# --- info -----------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.artifacts)  # checks schema version and every sha256
    print("\n".join(describe(manifest, args.artifacts) + backend_lines([args.backend] if args.backend else None)))
    return 0


def describe(manifest: Manifest, folder: Path) -> list[str]:
    """Lines describing a checked manifest: model, input, outputs, labels, verification."""
    inp, pre, src = manifest.input, manifest.input.preprocessing, manifest.source_model
    lo, hi = pre.value_range
    lines = [f"artifacts     {folder} (schema {manifest.schema_version}, created {manifest.created or 'unknown'})"]
    if src:
        lines.append(f"model         {src.get('name', '?')} from {src.get('file', '?')}, {src.get('params', '?')} "
                     f"parameters; ONNX opset {manifest.onnx.get('opset', '?')}")
    lines.append(f"integrity     {len(manifest.files)} files match the manifest's sha256")
    lines.append(f"input         {inp.name}: {inp.dtype} {_shape(inp.shape)} {inp.layout}; raw {pre.raw_dtype} "
                 f"pixels * {pre.scale:.6g} + {pre.offset:g} -> [{lo:g}, {hi:g}]")
    errors = _worst_errors(manifest.verification)
    rows = [[o.name, o.layer_class, _shape(o.shape), o.layout, o.role,
             f"max abs err {errors[o.name]:.2e}" if o.name in errors else ""] for o in manifest.outputs]
    lines.append("outputs")
    lines += ["  " + line for line in _table(rows)]
    labels = manifest.labels
    shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} labels)" if len(labels) > 20 else "")
    lines.append(f"labels        {shown or 'none'}")
    return lines + _verification_lines(manifest.verification)


def _verification_lines(v: dict) -> list[str]:
    if not v:
        return ["verification  none recorded"]
    try:
        tol = v.get("tolerance", {})
        lines = [f"verification  {'passed' if v.get('passed') else 'FAILED'} on {v.get('images', '?')} images "
                 f"({v.get('source', '?')}) against {v.get('reference', '?')}, atol {tol.get('atol', '?')} "
                 f"rtol {tol.get('rtol', '?')}"]
        per_backend: dict[str, float] = {}
        for by_backend in v.get("outputs", {}).values():
            for backend, report in by_backend.items():
                per_backend[backend] = max(per_backend.get(backend, 0.0), report["max_abs"])
        if per_backend:
            lines.append("  max abs error " + ", ".join(f"{b} {e:.2e}" for b, e in per_backend.items()))
        if v.get("accuracy"):
            lines.append("  accuracy " + ", ".join(f"{b} {a:.4f}" for b, a in v["accuracy"].items()))
        lines += [f"  problem: {p}" for p in v.get("problems", [])]
        return lines
    except (AttributeError, KeyError, TypeError, ValueError):  # the report is informative only
        return ["verification  report present but not in the expected form"]


def _worst_errors(v: dict) -> dict[str, float]:
    """Output name -> largest max abs error over the verified backends."""
    try:
        return {name: max(r["max_abs"] for r in by_backend.values())
                for name, by_backend in v.get("outputs", {}).items() if by_backend}
    except (AttributeError, KeyError, TypeError, ValueError):
        return {}


def backend_lines(only: list[str] | None = None) -> list[str]:
    """One line per backend: installed or not, its framework version, the devices it can use here."""
    installed = installed_backends()
    lines = ["backends"]
    rows = []
    for name in only or BACKENDS:
        package = BACKENDS[name][2]
        if name not in installed:
            rows.append([name, "not installed", f"needs the {package!r} package"])
            continue
        try:
            devices = runner_class(name).devices()
        except Exception as exc:  # a diagnostic listing: a broken framework is reported, not raised
            rows.append([name, "not usable", " ".join(str(exc).split())])
            continue
        version = getattr(sys.modules.get(package), "__version__", "?")
        rows.append([name, f"{package} {version}", "devices " + ", ".join(devices)])
    return lines + ["  " + line for line in _table(rows)]


def _shape(shape: Iterable) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows), default=0))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]


# --- run ------------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    """Extract feature maps of every input image into args.out.

    Memory: one batch of inputs and its outputs at a time, plus every .npz input array (read
    whole at the start; .npy inputs are memory-mapped instead). Outputs go to temporary .npy files beside args.out,
    then into the .npz: the disk needs about twice the output size while this runs.
    """
    started = time.perf_counter()
    out = _checked_out(args.out)
    paths = expand_inputs(args.input)  # before loading the model: cheap mistakes first
    with load(args.artifacts, backend=args.backend, device=args.device) as model:
        sources = [open_source(p, model.input_spec, args.batch_size, args.key, args.invert) for p in paths]
        total = sum(s.count for s in sources)
        batches = model.stream(chain.from_iterable(s.items() for s in sources), args.batch_size, args.outputs)
        progress = Progress(total, enabled=not args.quiet and total > args.batch_size and sys.stderr.isatty())
        with NpzWriter(out, total, compress=args.compress) as writer:
            if total == 0:  # still write every output, with zero rows
                writer.append(model.run(np.zeros((0, *model.input_spec.image_shape), np.uint8), args.outputs))
            try:
                for batch in batches:
                    writer.append(batch)
                    progress.update(writer.rows)
            finally:
                progress.close()  # ends the progress line, so that an error message starts a line of its own
            shapes = writer.commit()
        print(f"wrote {out}: {total} images, " + ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
              + f" ({model.backend} on {model.device}, {time.perf_counter() - started:.2f} s)")
    return 0


def _checked_out(path: Path) -> Path:
    if path.is_dir():
        raise DataError(f"--out {str(path)!r} is a folder; expected the path of an .npz file to write")
    if not path.parent.is_dir():
        raise DataError(f"--out {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Input arguments -> existing files, in order; quoted globs are expanded (sorted).

    Raises:
        DataError: a file that does not exist, a folder, or a glob matching no file.
    """
    paths: list[Path] = []
    for pattern in patterns:
        if any(ch in pattern for ch in GLOB_CHARS) and not Path(pattern).exists():
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise DataError(f"no input file matches {pattern!r}")
            paths += matches
        elif Path(pattern).is_dir():
            raise DataError(f"input {pattern!r} is a folder; pass its files, e.g. '{pattern.rstrip('/')}/*.png'")
        elif not Path(pattern).is_file():
            raise DataError(f"input file {pattern!r} not found")
        else:
            paths.append(Path(pattern))
    return paths


@dataclass
class Source:
    """One input file: how many images it holds, and a lazy iterator of images or batches."""

    path: Path
    count: int
    items: Callable[[], Iterator[np.ndarray]]


def open_source(path: Path, spec: InputSpec, batch_size: int, key: str | None = None, invert: bool = False) -> Source:
    """An input file as a Source: .npz / .npy arrays (one image or a batch), else an image file.

    Raises:
        DataError: unreadable array file, or a missing or ambiguous .npz key.
    """
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        from .images import read_image  # Pillow, only when image files are given

        return Source(path, 1, lambda: iter([read_image(path, spec, invert)]))
    array = read_array(path, key)
    if not is_batch(array, spec):
        return Source(path, 1, lambda: iter([array]))  # one image; a wrong shape is reported by the model
    step = max(int(batch_size), 1)  # slices, so that a memory-mapped .npy is read one batch at a time
    return Source(path, len(array), lambda: (array[i:i + step] for i in range(0, len(array), step)))


def read_array(path: Path, key: str | None = None) -> np.ndarray:
    """The image array of an .npy (memory-mapped) or .npz file (read whole).

    The .npz array is `key`, else "x_test" if present, else the only array.

    Raises:
        DataError: unreadable file, pickled objects, or a missing or ambiguous key.
    """
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            return archive[_pick_key(path, keys, key)]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if "pickle" in reason or "object" in reason.lower():  # numpy's advice to allow pickles is not ours
            reason = "not a numeric array (Python objects, or not .npy/.npz data; pickles are never loaded)"
        raise DataError(f"cannot read array file {str(path)!r}: {reason}") from None


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise DataError(f"{str(path)!r} has no array {key!r}; its arrays: {keys}")
        return key
    if DEFAULT_KEY in keys:
        return DEFAULT_KEY
    if len(keys) == 1:
        return keys[0]
    raise DataError(f"{str(path)!r} holds arrays {keys} and none is named {DEFAULT_KEY!r}; choose one with --key")


class Progress:
    """A one-line progress display rewritten with '\\r' (meant for a terminal's stderr)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.total, self.stream, self.enabled = total, stream or sys.stderr, enabled
        self.started, self.shown = time.perf_counter(), False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        percent = 100 * done // max(self.total, 1)
        self.stream.write(f"\r{done}/{self.total} images ({percent}%), {rate:,.0f} images/s")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


class NpzWriter:
    """Write named arrays batch by batch into an .npz, holding no more than one batch in memory.

    Each output streams into a temporary .npy beside the target (its header says `rows`
    rows, known in advance); commit() zips them and renames the .npz into place. Until
    then, and after any failure, the target is untouched and the temporaries are removed.
    """

    def __init__(self, path: Path, rows: int, compress: bool = False):
        self.path, self.expected, self.compress = Path(path), rows, compress
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        self.files: dict[str, tuple] = {}  # name -> (open file, shape of one row, dtype)
        self.counts: dict[str, int] = {}

    @property
    def rows(self) -> int:
        return min(self.counts.values(), default=0)

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            if name not in self.files:
                self._open(name, array)
            f, row_shape, dtype = self.files[name]
            if array.shape[1:] != row_shape or array.dtype != dtype:  # a backend bug, not a user error
                raise RuntimeError(f"output {name!r} changed from {row_shape} {dtype} to {array.shape[1:]} "
                                   f"{array.dtype} between batches")
            if array.size:  # written without a copy when already contiguous
                f.write(memoryview(np.ascontiguousarray(array)).cast("B"))
            self.counts[name] += len(array)

    def _open(self, name: str, first: np.ndarray) -> None:
        f = open(self.tmp / f"{name}.npy", "wb")
        header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
                  "shape": (self.expected, *first.shape[1:])}
        np.lib.format.write_array_header_1_0(f, header)
        self.files[name] = (f, first.shape[1:], first.dtype)
        self.counts[name] = 0

    def commit(self) -> dict[str, tuple]:
        """Zip the outputs into the target .npz atomically; returns name -> array shape."""
        for f, *_ in self.files.values():
            f.close()
        wrong = {n: c for n, c in self.counts.items() if c != self.expected}
        if wrong:  # would leave .npy headers that lie about their length
            raise RuntimeError(f"expected {self.expected} rows per output, wrote {wrong}")
        method = zipfile.ZIP_DEFLATED if self.compress else zipfile.ZIP_STORED
        with atomic_write(self.path) as f, zipfile.ZipFile(f, "w", method, allowZip64=True) as archive:
            for name in self.files:  # np.savez's layout: one NAME.npy member per array
                archive.write(self.tmp / f"{name}.npy", arcname=f"{name}.npy")
        return {name: (self.expected, *row) for name, (_, row, _) in self.files.items()}

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, *exc) -> None:
        for f, *_ in self.files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


__all__ = ["main", "parse_args", "describe", "backend_lines", "expand_inputs", "open_source", "read_array",
           "Progress", "NpzWriter"]
