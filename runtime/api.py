"""The one interface: load artifacts, run images, get named feature maps."""
from __future__ import annotations

import os
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .backends import runner_class
from .errors import DeviceError, InputError
from .manifest import InputSpec, Manifest, read_manifest
from .preprocess import to_batch

DEVICES = ("cpu", "gpu", "auto")


def load(artifacts: str | os.PathLike, backend: str = "onnx", device: str = "cpu", **options) -> "Model":
    """Load an artifacts folder written by `python -m export`, checking it before any inference.

    Args:
        artifacts: the folder holding manifest.json, model.onnx and saved_model/.
        backend: "onnx" (needs only onnxruntime) or "tf" (needs tensorflow).
        device: "cpu", "gpu" (an error if none is usable) or "auto" (a GPU when there is one).
        options: backend options, e.g. threads=N; for onnx also optimization="all"|"extended"|
            "basic"|"disable" or session_options=onnxruntime.SessionOptions().

    Raises:
        ArtifactError: missing, tampered or unreadable artifacts, or an unknown schema version.
        BackendError / DeviceError: backend not installed, or device not usable here.
    """
    folder = Path(artifacts)
    manifest = read_manifest(folder)
    cls = runner_class(backend)
    runner = cls(folder, manifest, resolve_device(device, backend, cls.devices()), **options)
    return Model(folder, manifest, runner)


def resolve_device(device: str, backend: str, available: list[str]) -> str:
    """'cpu' | 'gpu' | 'auto' -> the device to use; never falls back silently from 'gpu'."""
    if device not in DEVICES:
        raise DeviceError(f"unknown device {device!r}; expected one of {list(DEVICES)}")
    if device == "auto":
        return "gpu" if "gpu" in available else "cpu"
    if device not in available:
        raise DeviceError(f"device {device!r} asked for backend {backend!r}, but it has only {available} here")
    return device


class Model:
    """Exported feature maps behind one backend: dict in (names from the manifest), dict out."""

    def __init__(self, folder: Path, manifest: Manifest, runner):
        self.folder = folder
        self.manifest = manifest
        self._runner = runner

    @property
    def input_spec(self) -> InputSpec:
        return self.manifest.input

    @property
    def output_names(self) -> list[str]:
        return self.manifest.output_names

    @property
    def backend(self) -> str:
        return self._runner.name

    @property
    def device(self) -> str:
        return self._runner.device

    @property
    def providers(self) -> list[str]:
        """What really executes the model (onnxruntime providers, or the TensorFlow device)."""
        return list(self._runner.providers)

    def run(self, images, outputs: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Feature maps of a batch of images.

        Args:
            images: uint8 pixels (0..255, preprocessed as the manifest declares) or preprocessed
                floats, shaped [H,W], [H,W,C], [N,H,W] or [N,H,W,C].
            outputs: names to return (default all, in manifest order).

        Returns:
            output name -> float32 array with the batch dimension first.

        Raises:
            InputError: bad images or unknown output names.
        """
        names = self._names(outputs)
        batch = to_batch(images, self.input_spec)
        if len(batch) == 0:
            return {n: np.zeros((0, *self.manifest.output(n).shape[1:]), np.float32) for n in names}
        if self._runner is None:
            raise InputError("model is closed; load it again")
        return self._runner.run(batch, names)

    def stream(self, images, batch_size: int = 256, outputs: Iterable[str] | None = None) -> Iterator[dict]:
        """Run a large array, or an iterable of images or batches, batch by batch in bounded memory.

        Yields one dict per batch of at most batch_size images, in input order.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1; got {batch_size}")
        names = self._names(outputs)
        if isinstance(images, np.ndarray) and _is_batch(images, self.input_spec):
            for start in range(0, len(images), batch_size):
                yield self.run(images[start:start + batch_size], names)
            return
        if isinstance(images, np.ndarray):
            images = [images]  # one image
        for chunk in _chunks(images, self.input_spec, batch_size):
            yield self.run(chunk, names)

    def _names(self, outputs: Iterable[str] | None) -> list[str]:
        if outputs is None:
            return self.output_names
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        unknown = [n for n in names if n not in self.output_names]
        if unknown or not names:
            raise InputError(f"unknown output name(s) {unknown or names}; available: {self.output_names}")
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
        return f"Model({str(self.folder)!r}, backend={self.backend!r}, device={self.device!r}, outputs={self.output_names})"


def _is_batch(x: np.ndarray, spec: InputSpec) -> bool:
    h, w, c = spec.image_shape
    return x.ndim == 4 or (x.ndim == 3 and c == 1 and x.shape[1:] == (h, w))


def _chunks(items: Iterable, spec: InputSpec, batch_size: int) -> Iterator[np.ndarray]:
    """Group an iterable of single images or batches into float32 batches of batch_size."""
    pending: list[np.ndarray] = []
    count = 0
    for item in items:
        part = to_batch(item, spec)
        pending.append(part)
        count += len(part)
        while count >= batch_size:
            joined = np.concatenate(pending)
            yield joined[:batch_size]
            rest = joined[batch_size:]
            pending, count = ([rest] if len(rest) else []), len(rest)
    if count:
        yield np.concatenate(pending)
