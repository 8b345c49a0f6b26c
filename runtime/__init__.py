"""Deployment: load exported artifacts and read named feature maps.

Importing this package imports numpy only; a backend's framework (onnxruntime or
TensorFlow) is imported when that backend is loaded.
"""
from runtime.api import Model, load, resolve_device
from runtime.artifacts.manifest import Manifest, read_manifest
from runtime.backends import installed_backends
from runtime.compare import DEFAULT_TOLERANCE, Tolerance, compare_outputs
from runtime.errors import (
    ArtifactError,
    BackendError,
    DataError,
    DeviceError,
    ExportError,
    FeatureMapsError,
    InputError,
)
from runtime.jobs.stats import Stats, stats  # the function shadows the submodule's name: runtime.stats(model, images)

__all__ = [
    "load", "Model", "stats", "Stats", "resolve_device", "installed_backends", "read_manifest", "Manifest",
    "Tolerance", "DEFAULT_TOLERANCE", "compare_outputs",
    "FeatureMapsError", "ArtifactError", "InputError", "BackendError", "DeviceError", "DataError", "ExportError",
]
