"""`python -m runtime run`: feature maps of many images into an .npz or a Zarr store (locally or on Ray).

Also the input options that `run` and `stats` share.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from runtime.api import DEVICES, Model
from runtime.backends import BACKENDS
from runtime.errors import DataError
from runtime.cli.args import comma_list
from runtime.jobs.engine import load_model
from runtime.jobs.pipeline import Pipelined
from runtime.jobs.progress import progress_bar
from runtime.jobs.sources import DEFAULT_KEY, Batch, Source, batches, expand_inputs, open_source
from runtime.jobs.store import check_out, open_writer, summary


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs the model over many images."""
    p.add_argument("artifacts", type=Path, help="folder written by `python -m export`")
    p.add_argument("--input", required=True, nargs="+", action="extend", metavar="PATH",
                   help="an .npz or .npy array of images, a Zarr array or group, image files (PNG, JPEG, ...) or "
                        "folders of them; repeatable; quoted globs such as 'digits/*.png' are expanded")
    p.add_argument("--key", help=f"array to read from .npz or Zarr group inputs (default: {DEFAULT_KEY!r}, "
                                 "else the only array)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default="onnx", help="default: onnx")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="default: cpu; gpu is an error where none is usable")
    p.add_argument("--outputs", type=comma_list,
                   help="comma-separated output names (default: all; for stats, every feature map)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    p.add_argument("--invert", action="store_true", help="invert image files (for dark digits on a light background)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run the model on a Ray cluster (pip install 'featuremaps[ray]'): ADDRESS, else $RAY_ADDRESS, "
                        "else a local Ray runtime")
    p.add_argument("--quiet", action="store_true", help="no progress bar (there is none when stderr is not a terminal)")


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="extract feature maps of many images into an .npz or a Zarr store",
                         description="Extract feature maps of many images into an .npz or a Zarr v3 store holding "
                                     "one array per output.")
    add_input_arguments(run)
    run.add_argument("--out", required=True, type=Path,
                     help="the .npz file or .zarr store to write (built beside it, moved into place on success)")
    run.add_argument("--compress", action="store_true", help="deflate the .npz (slow; a .zarr store is always "
                                                             "compressed, with multi-threaded Blosc LZ4)")
    run.set_defaults(func=cmd_run)


def open_inputs(args: argparse.Namespace, model: Model) -> list[Source]:
    return [open_source(p, model.input_spec, args.batch_size, args.key, args.invert) for p in args.paths]


def results(args: argparse.Namespace, model: Model, sources: list[Source], names: list[str]) -> Iterator[tuple]:
    """(batch, {output name: maps}) in input order, computed here or on Ray."""
    items: Iterable[Batch] = batches(sources, model.input_spec, args.batch_size)
    if args.ray is not None:
        from runtime.jobs.ray_exec import ray_maps

        return ray_maps(args.ray, model, items, names)
    return ((b, model.run(b.images, names)) for b in items)


def cmd_run(args: argparse.Namespace) -> int:
    """Extract feature maps of every input image into args.out.

    Memory: a few batches of inputs and outputs at a time (one computed, up to two waiting to be
    written), plus every .npz input array (read whole; .npy and Zarr inputs are read batch by batch).
    """
    started = time.perf_counter()
    out = check_out(args.out)
    if args.compress and out.suffix.lower() == ".zarr":
        raise DataError("--compress applies to .npz output; a .zarr store is always compressed (Blosc LZ4)")
    args.paths = expand_inputs(args.input)  # before loading the model: cheap mistakes first
    with load_model(args.artifacts, args.backend, args.device) as model:
        empty = model.run(np.zeros((0, *model.input_spec.image_shape), np.uint8), args.outputs)  # checks names
        names = list(empty)
        sources = open_inputs(args, model)
        total = sum(s.count for s in sources)
        row_names: list[str] | None = [] if any(s.is_image_file for s in sources) else None
        attrs = summary(model.manifest, args.artifacts, names)
        with open_writer(out, total, args.batch_size, args.compress, attrs) as writer, \
                progress_bar(total, args.quiet) as bar:
            writer.append(empty)  # every output exists, with zero rows if the input is empty

            def consume(item: tuple) -> None:
                batch, maps = item
                writer.append(maps)
                if row_names is not None:
                    row_names.extend(batch.names)
                bar.update(len(batch.images))

            with Pipelined(consume) as pipe:  # compute the next batch while this one is compressed and written
                for item in results(args, model, sources, names):
                    pipe.put(item)
            shapes = writer.commit(row_names)
        where = f"{model.backend} on {model.device}" + (", Ray" if args.ray is not None else "")
        print(f"wrote {out}: {total} images, " + ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
              + f" ({where}, {time.perf_counter() - started:.2f} s)")
    return 0
