"""What every dataset job (run, stats, their Ray actors) shares: the model loaded for pipelined work."""
from __future__ import annotations

from runtime.api import Model, load


def load_model(artifacts, backend: str = "onnx", device: str = "cpu", threads: int | None = None) -> Model:
    """The model for a pipelined job (here or in a Ray actor): onnxruntime's threads do not spin-wait.

    threads: onnxruntime's intra-op threads (default: one per core).

    Spinning kept both cores busy while the writer thread compressed the previous batch: without
    it `run` to Zarr measured about 30% faster and 25% less CPU per image on 2 cores.
    """
    options = {}
    if backend == "onnx":
        from runtime.backends.onnx import session_options

        options["session_options"] = opts = session_options(threads)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return load(artifacts, backend=backend, device=device, **options)
