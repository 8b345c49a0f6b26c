"""What every dataset job (run, stats, their Ray actors) shares: the model loaded for pipelined work, and the
inputs a job reads (JobInputs)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime.api import Model, load
from runtime.artifacts.budgets import Budgets
from runtime.jobs.sources import Source, expand_inputs, open_source
from runtime.jobs.zarr_input import check_rows


def load_model(artifacts, backend: str = "onnx", device: str = "cpu", threads: int | None = None) -> Model:
    """The model for a pipelined job (here or in a Ray actor): onnxruntime's threads do not spin-wait.

    threads: onnxruntime's intra-op threads (default: one per core).

    Spinning kept both cores busy while the writer thread compressed the previous batch: without
    it `run` to Zarr measured about 30% faster and 25% less CPU per image on 2 cores.
    """
    options = {"session_options": _session_options(threads)} if backend == "onnx" else {}
    return load(artifacts, backend=backend, device=device, **options)


def _session_options(threads: int | None = None):
    from runtime.backends.onnx import session_options

    opts = session_options(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def job_session_options(model: Model, threads: int | None = None):
    """onnxruntime options as load_model sets them, for another session of the same job (the stats graph)."""
    return _session_options(threads) if model.backend == "onnx" else None


@dataclass(kw_only=True)
class JobInputs:
    """What a dataset job reads, and where and how it runs the model.

    Attributes:
        artifacts: the folder written by `python -m export`.
        inputs: .npz / .npy arrays, Zarr arrays or groups, image files or folders of them; quoted globs expand.
        key: the array to read from .npz or Zarr group inputs (default: "x_test", else the only array).
        backend, device: as runtime.load takes them ("onnx" or "tf"; "cpu", "gpu" or "auto").
        outputs: output names to compute (default: all; for statistics, every feature map).
        batch_size: images per batch.
        invert: invert image files (dark digits on a light background).
        ray: None runs here; else a Ray cluster's address ("": $RAY_ADDRESS, else a local Ray runtime).
        quiet: no progress bar (there is none when stderr is not a terminal).
        ray_logs: let Ray print its own log lines (start-up, Ray Data, workers); quiet by default.
        budgets: what an input may declare before it is read (runtime.artifacts.budgets.Budgets).
    """

    artifacts: str | os.PathLike
    inputs: Sequence[str | os.PathLike]
    key: str | None = None
    backend: str = "onnx"
    device: str = "cpu"
    outputs: list[str] | None = None
    batch_size: int = 256
    invert: bool = False
    ray: str | None = None
    quiet: bool = False
    ray_logs: bool = False
    budgets: Budgets = field(default_factory=Budgets)


def input_paths(job: JobInputs) -> list[Path]:
    """`job.inputs` expanded (runtime.jobs.sources.expand_inputs): cheap to check before the model is loaded.

    Raises:
        DataError: a path that does not exist, a glob matching nothing, or a folder without image files.
    """
    inputs = [job.inputs] if isinstance(job.inputs, (str, os.PathLike)) else job.inputs
    return expand_inputs([os.fspath(p) for p in inputs])


def open_inputs(paths: Sequence[Path], model: Model, job: JobInputs) -> list[Source]:
    """The expanded input paths (runtime.jobs.sources.expand_inputs) as Sources, read as `job` says."""
    sources = [open_source(p, model.input_spec, job.batch_size, job.key, job.invert, job.budgets) for p in paths]
    check_rows(f"the input list ({len(sources)} inputs)", sum(s.count for s in sources), job.budgets)
    return sources
