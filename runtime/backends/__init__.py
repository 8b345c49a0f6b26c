"""Backend registry: name -> runner class, imported only when asked for.

A runner serves one artifacts folder on one device with this small surface:

    runner = Runner(folder, manifest, device, **options)   # device already resolved: "cpu" | "gpu"
    runner.run(batch, names) -> dict[name, ndarray]         # batch: float32 [N,H,W,C], N >= 1
    runner.close()
    Runner.devices() -> list[str]                            # devices usable here, "cpu" first
    Runner.gpu_missing() -> str | None                       # why there is no GPU here, None if there is
    Runner.name: str; Runner.files: artifact paths it always loads, read with hashing.read_verified or
        copy_verified so that the bytes hashed are the bytes loaded
    runner.device: str; runner.providers: list[str] (what really runs it)

Adding a backend is one module here plus one line in BACKENDS.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

from runtime.errors import BackendError


class Backend(NamedTuple):
    """Where a backend's runner is, and the package its framework comes from (checked without importing it)."""

    module: str
    cls: str
    package: str


BACKENDS = {
    "onnx": Backend("runtime.backends.onnx", "OnnxRunner", "onnxruntime"),
    "tf": Backend("runtime.backends.tf", "TFRunner", "tensorflow"),
}


def runner_class(backend: str):
    """The runner class of a backend, importing its framework now.

    Raises:
        BackendError: unknown backend, or its framework is not installed.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; available: {sorted(BACKENDS)}")
    entry = BACKENDS[backend]
    try:
        return getattr(importlib.import_module(entry.module), entry.cls)
    except ImportError as exc:
        raise BackendError(
            f"backend {backend!r} needs the {entry.package!r} package, which is not importable here ({exc}); "
            f"install it with `pip install 'featuremaps[{backend}]'`; installed backends: {installed_backends()}"
        ) from None


def gpu_missing(backend: str) -> str | None:
    """Why a backend cannot use a GPU here, or None when it can: the reason GPU tests skip with.

    A backend that is not installed has no GPU either; unknown backends still raise.
    """
    if backend in BACKENDS and backend not in installed_backends():
        return f"backend {backend!r} is not installed (needs the {BACKENDS[backend].package!r} package)"
    return runner_class(backend).gpu_missing()


def installed_backends() -> list[str]:
    """Backends whose framework can be found, without importing it."""
    from importlib.util import find_spec

    return [name for name, entry in BACKENDS.items() if find_spec(entry.package) is not None]
