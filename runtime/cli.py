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
import errno
import glob
import os
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
from .errors import ArgumentParser, ArtifactError, DataError, comma_list
from .hashing import file_state
from .manifest import InputSpec, Manifest, read_manifest, verify_files_against
from .preprocess import is_batch

ARRAY_SUFFIXES = (".npz", ".npy")
DEFAULT_KEY = "x_test"  # Keras' mnist.npz and the shipped digits name their test images so
GLOB_CHARS = "*?["


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m runtime", description="Inspect exported artifacts and extract their feature maps.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{info,run}")
    backends = sorted(BACKENDS)

    info = sub.add_parser("info", help="describe an artifacts folder and the backends and devices available here",
                          description="Describe an artifacts folder (checking the sha256 of each backend's files) "
                                      "and the backends here.")
    info.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    info.add_argument("--backend", choices=backends,
                      help="check only this backend's files and devices; they must be intact (default: every "
                           "installed backend, absent files reported; probing tf imports TensorFlow)")
    info.set_defaults(func=cmd_info)

    run = sub.add_parser("run", help="extract feature maps of many images into an .npz",
                         description="Extract feature maps of many images into an .npz holding one array per output.")
    run.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    run.add_argument("--input", required=True, nargs="+", action="extend", metavar="FILE",
                     help="an .npz or .npy array of images, or image files (PNG, JPEG, ...); "
                          "repeatable; quoted globs such as 'digits/*.png' are expanded")
    run.add_argument("--out", required=True, type=Path, help="the .npz file to write (atomically; must end in .npz)")
    run.add_argument("--key", help=f"array to read from .npz inputs (default: {DEFAULT_KEY!r}, else the only array)")
    run.add_argument("--backend", choices=backends, default="onnx", help="default: onnx")
    run.add_argument("--device", choices=DEVICES, default="cpu", help="default: cpu; gpu is an error where none is usable")
    run.add_argument("--outputs", type=comma_list, help="comma-separated output names (default: all)")
    run.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    run.add_argument("--invert", action="store_true", help="invert image files (for dark digits on a light background)")
    run.add_argument("--compress", action="store_true", help="deflate the .npz (slower; ReLU maps shrink a lot)")
    run.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    run.set_defaults(func=cmd_run)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return args.func(args)


# --- info -----------------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    folder = args.artifacts
    manifest = read_manifest(folder, verify_files=False)  # schema version; the files are checked per backend
    integrity = integrity_lines(manifest, folder, args.backend)
    print("\n".join(describe(manifest, folder, integrity) + backend_lines([args.backend] if args.backend else None)))
    return 0


def describe(manifest: Manifest, folder: Path, integrity: Sequence[str] = ()) -> list[str]:
    """Lines describing a manifest: model, integrity (lines given), input, outputs, labels, verification."""
    inp, pre, src = manifest.input, manifest.input.preprocessing, manifest.source_model
    lo, hi = pre.value_range
    lines = [f"artifacts     {folder} (schema {manifest.schema_version}, created {manifest.created or 'unknown'})"]
    if src:
        lines.append(f"model         {src.get('name', '?')} from {src.get('file', '?')}, {src.get('params', '?')} "
                     f"parameters; ONNX opset {manifest.onnx.get('opset', '?')}")
    lines += [f"{'integrity' if i == 0 else '':14s}{line}" for i, line in enumerate(integrity)]
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


@dataclass
class _FileGroup:
    """The listed artifact files under some path prefixes, and what was found of them on disk."""

    label: str
    prefixes: tuple[str, ...]
    files: list[str]  # listed paths under the prefixes
    missing: list[str]
    wrong: list[str]  # present, but not of the recorded size or sha256

    @property
    def unlisted(self) -> list[str]:
        return [p for p in self.prefixes if not any(_under(rel, p) for rel in self.files)]

    @property
    def intact(self) -> bool:
        return bool(self.files) and not (self.unlisted or self.missing or self.wrong)

    def line(self) -> str:
        if self.unlisted:
            return f"{self.label}: the manifest lists no sha256 for {self.unlisted}: cannot check"
        what = ", ".join(self._what(p) for p in self.prefixes)
        if len(self.missing) == len(self.files):
            return f"{self.label}: {what} absent"
        if self.missing:
            return (f"{self.label}: {what} incomplete, {len(self.missing)} of {len(self.files)} files missing "
                    f"(e.g. {self.missing[0]!r})")
        if self.wrong:
            return f"{self.label}: {what} tampered with or truncated (e.g. {self.wrong[0]!r})"
        return f"{self.label}: {what} {'matches its' if len(self.files) == 1 else 'match their'} sha256"

    def _what(self, prefix: str) -> str:
        count = sum(_under(rel, prefix) for rel in self.files)
        return prefix if count == 1 and prefix in self.files else f"{prefix}/ ({count} files)"


def integrity_lines(manifest: Manifest, folder: Path, backend: str | None = None) -> list[str]:
    """One line per backend, and one for the other listed files: do they match the manifest's sha256?

    With `backend`, only that backend's files are hashed, as `load` does (no other framework is
    imported), and they must be intact. Without it, every backend's files are checked: absent
    files are reported (an ONNX-only deployment ships manifest.json and model.onnx alone), but a
    present file with the wrong sha256 is an error, and so is a folder that no backend can load.

    Raises:
        ArtifactError: no or malformed 'files' in the manifest; a file present but tampered with or
            truncated; `backend`'s files absent or unlisted; without `backend`, no backend's files complete.
    """
    verify_files_against(manifest, folder, only=[])  # hashes nothing: checks that the manifest lists files
    lines: dict[str, str | _FileGroup] = {}  # label -> its line, or its files
    for name in [backend] if backend else BACKENDS:
        try:
            prefixes = tuple(runner_class(name).files)
        except Exception:  # a diagnostic listing: backend_lines, below, says why
            lines[name] = f"{name}: not checked (backend not usable here)"
            continue
        lines[name] = group = _file_group(manifest, folder, name, prefixes)
        if backend and not group.intact:
            verify_files_against(manifest, folder, only=list(prefixes))  # raises load's own message
    owned = [p for g in lines.values() if isinstance(g, _FileGroup) for p in g.prefixes]
    others = [rel for rel in manifest.files if not any(_under(rel, p) for p in owned)]
    if others and backend:
        why = f" (not loaded by backend {backend!r})" if owned else ""
        lines["other"] = f"other: {len(others)} files not checked{why}"
    elif others:
        lines["other"] = _file_group(manifest, folder, "other", tuple(dict.fromkeys(r.split("/")[0] for r in others)))
    groups = [g for g in lines.values() if isinstance(g, _FileGroup)]
    for group in groups:
        if group.wrong:  # a present file that differs is never a deployment choice
            verify_files_against(manifest, folder, only=group.wrong[:1])  # raises the tampering message
    backends = [g for g in groups if g.label != "other"]
    if backends and not any(g.intact for g in backends):
        raise ArtifactError(f"no backend can load {str(folder)!r}: " + "; ".join(g.line() for g in backends))
    return [g if isinstance(g, str) else g.line() for g in lines.values()]


def _file_group(manifest: Manifest, folder: Path, label: str, prefixes: tuple[str, ...]) -> _FileGroup:
    files = [rel for rel in manifest.files if any(_under(rel, p) for p in prefixes)]
    missing, wrong = [], []
    for rel in files:  # confined first: nothing outside the folder is stat'ed (read_manifest checked the entries)
        state = file_state(folder, rel, manifest.files[rel])
        (missing if state == "missing" else wrong if state == "wrong" else []).append(rel)
    return _FileGroup(label, prefixes, files, missing, wrong)


def _under(rel: str, prefix: str) -> bool:
    return rel == prefix or rel.startswith(prefix + "/")


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
    """--out, checked before anything is loaded: an .npz path in a folder that accepts new files.

    Raises:
        DataError: a folder, a name not ending in .npz, a missing folder, or one where no file can be created.
    """
    if path.is_dir():
        raise DataError(f"--out {str(path)!r} is a folder; expected the path of an .npz file to write")
    if path.suffix.lower() != ".npz":
        raise DataError(f"--out {str(path)!r} must end in .npz (the file written is an .npz archive)")
    if not path.parent.is_dir():
        raise DataError(f"--out {str(path)!r}: folder {str(path.parent)!r} does not exist")
    try:  # os.access alone passes for root where creating still fails (read-only mounts, /proc)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _cannot_write(path, exc, f"folder {str(path.parent)!r} does not accept new files") from None
    return path


def _cannot_write(path: Path, exc: OSError, what: str = "") -> DataError:
    """The DataError for an OSError met while writing path (no traceback: a full disk is not a bug)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"cannot write {str(path)!r}: " + (f"{what} ({reason})" if what else reason))


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
        self.files: dict[str, tuple] = {}  # name -> (open file, shape of one row, dtype)
        self.counts: dict[str, int] = {}
        try:
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None

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
                try:
                    f.write(memoryview(np.ascontiguousarray(array)).cast("B"))
                except OSError as exc:  # e.g. the disk is full
                    raise _cannot_write(self.path, exc) from None
            self.counts[name] += len(array)

    def _open(self, name: str, first: np.ndarray) -> None:
        try:
            f = open(self.tmp / f"{name}.npy", "wb")
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None
        self.files[name] = (f, first.shape[1:], first.dtype)  # registered at once: closed by __exit__
        self.counts[name] = 0
        header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
                  "shape": (self.expected, *first.shape[1:])}
        try:
            np.lib.format.write_array_header_1_0(f, header)
        except OSError as exc:
            raise _cannot_write(self.path, exc) from None

    def commit(self) -> dict[str, tuple]:
        """Zip the outputs into the target .npz atomically; returns name -> array shape."""
        for f, *_ in self.files.values():
            f.close()
        wrong = {n: c for n, c in self.counts.items() if c != self.expected}
        if wrong:  # would leave .npy headers that lie about their length
            raise RuntimeError(f"expected {self.expected} rows per output, wrote {wrong}")
        method = zipfile.ZIP_DEFLATED if self.compress else zipfile.ZIP_STORED
        try:
            with atomic_write(self.path) as f, zipfile.ZipFile(f, "w", method, allowZip64=True) as archive:
                for name in self.files:  # np.savez's layout: one NAME.npy member per array
                    archive.write(self.tmp / f"{name}.npy", arcname=f"{name}.npy")
        except OSError as exc:  # e.g. the disk is full, or the folder stopped accepting files
            raise _cannot_write(self.path, exc) from None
        return {name: (self.expected, *row) for name, (_, row, _) in self.files.items()}

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, *exc) -> None:
        for f, *_ in self.files.values():
            f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


__all__ = ["main", "parse_args", "describe", "integrity_lines", "backend_lines", "expand_inputs", "open_source",
           "read_array", "Progress", "NpzWriter"]
