"""`python -m runtime run`: its flags, and the input flags that `run` and `stats` share (runtime/jobs/extract.py
does the work)."""
from __future__ import annotations

import argparse
from pathlib import Path

from runtime.api import DEVICES
from runtime.artifacts.budgets import MAX_CHUNK_BYTES, MAX_MEMBER_BYTES, MAX_PIXELS, MAX_ROWS, Budgets
from runtime.backends import BACKENDS
from runtime.cli.args import comma_list, positive_int
from runtime.cli.process import say
from runtime.jobs.extract import ExtractOptions, extract
from runtime.jobs.sources import DEFAULT_KEY
from runtime.jobs.store import DTYPES


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs the model over many images (runtime.jobs.engine.JobInputs)."""
    p.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    p.add_argument("--input", required=True, nargs="+", action="extend", metavar="PATH",
                   help="an .npz or .npy array of images, a Zarr array or group, image files (PNG, JPEG, ...) or "
                        "folders of them; repeatable; quoted globs such as 'digits/*.png' are expanded")
    p.add_argument("--key", help=f"array to read from .npz or Zarr group inputs (default: {DEFAULT_KEY!r}, "
                                 "else the only array)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="onnx", help="default: onnx")
    p.add_argument("--device", choices=DEVICES, default="cpu",
                   help="default: cpu; gpu is an error where none is usable")
    p.add_argument("--outputs", type=comma_list,
                   help="comma-separated output names (default: all; for stats, every feature map)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    p.add_argument("--invert", action="store_true", help="invert image files (for dark digits on a light background)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run the model on a Ray cluster (pip install 'featuremaps[ray]'): ADDRESS, else $RAY_ADDRESS, "
                        "else a local Ray runtime")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")
    p.add_argument("-v", "--verbose", action="store_true", help="with --ray: show Ray's own log lines")
    add_budget_arguments(p)


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    """The decoding budgets (runtime.artifacts.budgets): what an input may declare before a byte of it is read."""
    b = p.add_argument_group("decoding budgets", "checked against what an input declares, before it is decoded")
    b.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS,
                   help=f"pixels (width x height) per image file (default: {MAX_PIXELS:,}, Pillow's)")
    b.add_argument("--max-chunk-bytes", type=positive_int, default=MAX_CHUNK_BYTES,
                   help=f"decoded bytes per Zarr chunk (default: {MAX_CHUNK_BYTES:,})")
    b.add_argument("--max-member-bytes", type=positive_int, default=MAX_MEMBER_BYTES,
                   help=f"decoded bytes per .npz member (default: {MAX_MEMBER_BYTES:,})")
    b.add_argument("--max-rows", type=positive_int, default=MAX_ROWS,
                   help=f"images per input array (default: {MAX_ROWS:,})")
    b.add_argument("--fill-absent", action="store_true",
                   help="read a Zarr store's absent chunks as its declared fill value (default: an error)")


def input_options(args: argparse.Namespace) -> dict:
    """The parsed input flags (add_input_arguments) as JobInputs' keyword arguments."""
    return {"artifacts": args.artifacts, "inputs": args.input, "key": args.key, "backend": args.backend,
            "device": args.device, "outputs": args.outputs, "batch_size": args.batch_size, "invert": args.invert,
            "ray": args.ray, "quiet": args.quiet, "ray_logs": args.verbose,
            "budgets": Budgets(args.max_pixels, args.max_chunk_bytes, args.max_member_bytes, args.max_rows,
                               args.fill_absent)}


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="extract feature maps of many images into an .npz or a Zarr store",
                         description="Extract feature maps of many images into an .npz or a Zarr v3 store holding "
                                     "one array per output.")
    add_input_arguments(run)
    run.add_argument("--out", required=True, type=Path,
                     help="the .npz file or .zarr store to write (built beside it, moved into place on success)")
    run.add_argument("--compress", action="store_true", help="deflate the .npz (slow; a .zarr store is always "
                                                             "compressed, with multi-threaded Blosc LZ4)")
    run.add_argument("--dtype", choices=DTYPES, default="float32",
                     help="stored maps: float32 (default, the model's) or float16 (half the bytes; the store "
                          "records it, runtime.jobs.store.read_maps reads float32 back)")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    result = extract(ExtractOptions(**input_options(args), out=args.out, compress=args.compress,
                                    dtype=args.dtype))
    say(f"wrote {result.out}: {result.images} images, "
          + ", ".join(f"{n} {list(s)}" for n, s in result.shapes.items())
          + f" ({result.where}, {result.seconds:.2f} s)")
    return 0
