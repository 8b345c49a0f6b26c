"""The one interface: load artifacts, run images, get named feature maps."""
from __future__ import annotations

import inspect
import os
from numbers import Integral
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from runtime.artifacts.manifest import InputSpec, Manifest, read_manifest
from runtime.backends import runner_class
from runtime.errors import BackendError, DeviceError, InputError
from runtime.preprocess import is_batch, to_batch

DEVICES = ("cpu", "gpu", "auto")
CHUNK = 256  # images per backend call when run() is given more: bounds memory beyond the returned outputs


def load(artifacts: str | os.PathLike, backend: str = "onnx", device: str = "cpu", check_values: bool = True,
         **options) -> "Model":
    """Load an artifacts folder written by `python -m export`, checking it before any inference.

    Args:
        artifacts: the folder holding manifest.json, model.onnx and saved_model/.
        backend: "onnx" (needs only onnxruntime) or "tf" (needs tensorflow).
        device: "cpu", "gpu" (an error if none is usable) or "auto" (a GPU when there is one).
        check_values: scan float input for NaN/inf and out-of-range values on every run (shape
            and dtype are always checked). False saves a few microseconds per call for callers
            that produce the input themselves; bad values then give garbage, not an error.
        options: backend options, e.g. threads=N; for onnx also optimization="all"|"extended"|
            "basic"|"disable" or session_options=onnxruntime.SessionOptions(), and cuda_options={...}
            for the CUDA provider on the GPU (default {"use_tf32": 0}: float32, not TF32).

    Raises:
        ArtifactError: missing, tampered or unreadable artifacts, a manifest that does not follow
            its schema, or paths leading outside the folder. The backend hashes exactly the bytes it
            loads (and only the files it loads, so an ONNX-only deployment may ship manifest.json and
            model.onnx alone).
        BackendError / DeviceError: backend not installed, or device not usable here.
    """
    _check_device_name(device)  # before importing a framework or hashing files
    folder = Path(artifacts)
    manifest = read_manifest(folder, verify_files=False)
    cls = runner_class(backend)
    _check_options(cls, options)
    available = cls.devices()
    resolved = resolve_device(device, backend, available, None if "gpu" in available else cls.gpu_missing())
    try:
        runner = cls(folder, manifest, resolved, **options)
    except DeviceError:
        # A GPU can be listed yet fail to start (e.g. onnxruntime-gpu without a driver):
        # "auto" then means CPU; an explicit "gpu" stays an error.
        if device != "auto" or resolved == "cpu":
            raise
        runner = cls(folder, manifest, "cpu", **options)
    return Model(folder, manifest, runner, check_values)


def _check_options(cls, options: dict) -> None:
    """Backend options must be ones the runner takes; threads a positive int."""
    fixed = ("self", "folder", "manifest", "device")
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise BackendError(f"unknown option(s) {unknown} for backend {cls.name!r}; accepted: {accepted}")
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BackendError(f"threads must be a positive integer or None; got {threads!r}")


def _check_device_name(device: str) -> None:
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected one of {list(DEVICES)}")


def resolve_device(device: str, backend: str, available: list[str], why: str | None = None) -> str:
    """'cpu' | 'gpu' | 'auto' -> the device to use; never falls back silently from 'gpu'.

    why: the backend's reason for having no GPU, added to the error.
    """
    _check_device_name(device)
    if device == "auto":
        return "gpu" if "gpu" in available else "cpu"
    if device not in available:
        because = f": {why}" if why else ""
        raise DeviceError(f"device {device!r} asked for backend {backend!r}, but it has only {available} "
                          f"here{because}")
    return device


class Model:
    """Exported feature maps behind one backend: dict in (names from the manifest), dict out."""

    def __init__(self, folder: Path, manifest: Manifest, runner, check_values: bool = True):
        self.folder = folder
        self.manifest = manifest
        self._runner = runner
        # Kept apart from the runner so that they still answer after close().
        self._backend, self._device, self._providers = runner.name, runner.device, list(runner.providers)
        self._all_names = manifest.output_names  # built once: run() reads it on every call
        self._check_values = check_values

    @property
    def input_spec(self) -> InputSpec:
        return self.manifest.input

    @property
    def output_names(self) -> list[str]:
        return list(self._all_names)

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def device(self) -> str:
        return self._device

    @property
    def providers(self) -> list[str]:
        """What really executes the model (onnxruntime providers, or the TensorFlow device)."""
        return list(self._providers)

    def run(self, images, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Feature maps of a batch of images.

        Args:
            images: uint8 pixels (0..255, preprocessed as the manifest declares) or preprocessed
                floats, shaped [H,W], [H,W,C], [N,H,W] or [N,H,W,C].
            outputs: names to return (default all, in manifest order).

        Returns:
            output name -> float32 array with the batch dimension first.

        Raises:
            InputError: bad images, unknown output names, or a closed model.
        """
        self._check_open()
        names = self._names(outputs)
        if (isinstance(images, np.ndarray) and images.ndim >= 3 and len(images) > CHUNK
                and is_batch(images, self.input_spec)):
            return self._run_in_chunks(images, names)
        return self._infer(to_batch(images, self.manifest.input, self._check_values), names)

    def _run_in_chunks(self, images: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """A large batch, CHUNK images at a time, into output arrays allocated once.

        A backend run on the whole batch would hold its own outputs and intermediates for every
        image and then copy them out (13.3 GB peak for 5.9 GB of outputs); here the peak is the
        returned outputs plus one chunk's worth.
        """
        total = len(images)
        result: dict[str, np.ndarray] = {}
        for start in range(0, total, CHUNK):
            part = self._infer(to_batch(images[start:start + CHUNK], self.manifest.input, self._check_values), names)
            for name in names:
                if name not in result:
                    result[name] = np.empty((total, *part[name].shape[1:]), part[name].dtype)
                result[name][start:start + len(part[name])] = part[name]
        return result

    def _infer(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """Run a batch that to_batch already prepared."""
        self._check_open()  # again: a stream may outlive close()
        if len(batch) == 0:
            return {n: np.zeros((0, *(d or 0 for d in self.manifest.output(n).shape[1:])), np.float32) for n in names}
        return self._runner.run(batch, names)

    def stream(self, images, batch_size: int = 256, outputs: Iterable[str] | None = None) -> Iterator[dict]:
        """Run a large array, or an iterable of images or batches, batch by batch in bounded memory.

        Arguments are checked now; images are read lazily. Holds one batch of inputs and its
        outputs at a time, plus the array passed in (sliced, not copied) or, for an iterable,
        the current item converted to float32: feed large data as an array (np.load with
        mmap_mode="r" works) or as items no larger than a batch.

        Returns:
            an iterator of one dict per batch of at most batch_size images, in input order
            (nothing for an empty input).

        Raises:
            InputError: batch_size below 1, unknown output names or a closed model (now);
                bad images (while iterating).
        """
        if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be an integer of at least 1; got {batch_size!r}")
        self._check_open()
        names = self._names(outputs)
        if isinstance(images, np.ndarray) and is_batch(images, self.input_spec):
            return (self.run(images[start:start + batch_size], names) for start in range(0, len(images), batch_size))
        if isinstance(images, np.ndarray):
            images = [images]  # one image
        chunks = _chunks(images, self.input_spec, int(batch_size), self._check_values)
        return (self._infer(chunk, names) for chunk in chunks)  # chunks are prepared: not checked twice

    def _check_open(self) -> None:
        if self._runner is None:
            raise InputError("model is closed; load it again")

    def _names(self, outputs: Iterable[str] | None) -> list[str]:
        if outputs is None:
            return self._all_names
        names = list(dict.fromkeys([outputs] if isinstance(outputs, str) else outputs))  # drop repeats, keep order
        unknown = [n for n in names if n not in self._all_names]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; available: {self.output_names}")
        if not names:
            raise InputError(f"no output names given; available: {self.output_names}")
        return names

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Model({str(self.folder)!r}, backend={self.backend!r}, device={self.device!r}, "
                f"outputs={self.output_names})")


def _chunks(items: Iterable, spec: InputSpec, batch_size: int,
            check_values: bool = True) -> Iterator[np.ndarray]:
    """Group an iterable of single images or batches into float32 batches of batch_size."""
    pending: list[np.ndarray] = []
    count = 0
    for item in items:
        part = to_batch(item, spec, check_values)
        if pending and part.shape[1:] != pending[0].shape[1:]:
            raise InputError(f"a batch holds samples of one size; got {list(pending[0].shape[1:])} and then "
                             f"{list(part.shape[1:])}: pass samples of different sizes in separate calls")
        # Slice each part instead of re-joining the remainder: a large item is copied once.
        while len(part):
            take = min(batch_size - count, len(part))
            pending.append(part[:take])
            count += take
            part = part[take:]
            if count == batch_size:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, count = [], 0
    if count:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)
