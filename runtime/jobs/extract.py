"""The `run` job: feature maps of many images into an .npz or a Zarr store, computed here or on Ray.

    result = extract(ExtractOptions(artifacts="artifacts", inputs=["digits/*.png"], out=Path("acts.zarr")))
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.api import Model
from runtime.errors import DataError
from runtime.jobs.engine import JobInputs, input_paths, job_session_options, load_model, open_inputs
from runtime.jobs.pipeline import Pipelined
from runtime.jobs.progress import progress_bar
from runtime.jobs.sources import Batch, Source, batches
from runtime.jobs.stats_graph import Float16Graph
from runtime.jobs.store import check_out, open_writer, stored_dtype, summary


@dataclass(kw_only=True)
class ExtractOptions(JobInputs):
    """What `extract` reads (JobInputs) and writes.

    Attributes:
        out: the .npz file or .zarr store to write (built beside it, moved into place on success).
        compress: deflate the .npz (slow; a .zarr store is always compressed, with multi-threaded Blosc LZ4).
        dtype: "float32" (the model's), or "float16": half the bytes to compress and store (maps above 65504
            become inf; relative rounding 2**-11). The store records it; read_maps gives float32 back.
    """

    out: str | os.PathLike
    compress: bool = False
    dtype: str = "float32"


@dataclass
class ExtractResult:
    """What `extract` wrote: where, how many images, each output's array shape, where it ran, how long it took."""

    out: Path
    images: int
    shapes: dict[str, tuple]
    backend: str
    device: str
    on_ray: bool
    seconds: float

    @property
    def where(self) -> str:
        """"onnx on cpu", or "onnx on cpu, Ray"."""
        return f"{self.backend} on {self.device}" + (", Ray" if self.on_ray else "")


def extract(options: ExtractOptions) -> ExtractResult:
    """Extract the feature maps of every input image into `options.out`, one array per output.

    Memory: a few batches of inputs and outputs at a time (one computed, up to two waiting to be
    written), plus every .npz input array (read whole; .npy and Zarr inputs are read batch by batch).

    Raises:
        DataError: a bad `out`, `compress` with a Zarr store, unreadable inputs, a failed write.
        ArtifactError, BackendError, DeviceError, InputError: as runtime.load and Model.run raise them.
    """
    started = time.perf_counter()
    out = check_out(Path(options.out))
    if options.compress and out.suffix.lower() == ".zarr":
        raise DataError("`compress=True` applies to .npz output; a .zarr store is always compressed (Blosc LZ4)")
    stored = stored_dtype(options.dtype)
    paths = input_paths(options)  # before loading the model: cheap mistakes first
    with load_model(options.artifacts, options.backend, options.device) as model:
        empty = model.run(np.zeros((0,), np.uint8), options.outputs)  # checks names
        names = list(empty)
        empty = {n: a.astype(stored) for n, a in empty.items()}
        sources = open_inputs(paths, model, options)
        total = sum(s.count for s in sources)
        row_names: list[str] | None = [] if any(s.is_image_file for s in sources) else None
        attrs = {**summary(model.manifest, Path(options.artifacts), names), "dtype": stored.name}
        with open_writer(out, total, options.batch_size, options.compress, attrs) as writer, \
                progress_bar(total, options.quiet) as bar:
            if total == 0 or not model.input_spec.free_axes:  # free sizes: the first batch sets the row shape
                writer.append(empty)  # every output exists, with zero rows if the input is empty

            def consume(item: tuple) -> None:
                batch, maps = item
                writer.append({n: a.astype(stored, copy=False) for n, a in maps.items()})  # float16 already: no-op
                if row_names is not None:
                    row_names.extend(batch.names)
                bar.update(len(batch.images))

            with Pipelined(consume) as pipe:  # compute the next batch while this one is compressed and written
                for item in _maps(options, model, sources, names, stored):
                    pipe.put(item)
            shapes = writer.commit(row_names)
        return ExtractResult(out, total, shapes, model.backend, model.device, options.ray is not None,
                             time.perf_counter() - started)


def _maps(job: JobInputs, model: Model, sources: list[Source], names: list[str], stored=np.float32) -> Iterator[tuple]:
    """(batch, {output name: maps}) in input order, computed here or on Ray; float16 maps come out of onnxruntime
    as float16 here (runtime.jobs.stats_graph.Float16Graph), else the writer converts them."""
    items: Iterable[Batch] = batches(sources, model.input_spec, job.batch_size)
    if job.ray is not None:
        from runtime.jobs.ray_exec import ray_maps

        return ray_maps(job.ray, model, items, names, logs=job.ray_logs)
    if stored == np.float16 and model.backend == "onnx":
        half = Float16Graph(model, names, job_session_options(model))
        return ((b, half.run(b.images)) for b in items)
    return ((b, model.run(b.images, names)) for b in items)
