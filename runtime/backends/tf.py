"""TensorFlow backend: the SavedModel's serving signature, called as a concrete function."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from runtime.artifacts.hashing import copy_verified
from runtime.artifacts.manifest import INPUT_NAME, SAVED_MODEL_DIR, SIGNATURE, Manifest, listed_files
from runtime.backends.quiet_tf import import_tensorflow
from runtime.errors import ArtifactError, DeviceError

tf = import_tensorflow()


class TFRunner:
    name = "tf"
    files = (SAVED_MODEL_DIR,)

    def __init__(self, folder: Path, manifest: Manifest, device: str, threads: int | None = None):
        if device == "gpu":
            if reason := self.gpu_missing():
                raise DeviceError(f"device 'gpu' asked for, but {reason}; available: {self.devices()}")
            # float32, not TF32, as the onnx backend, so that GPU_TOLERANCE holds for both. TensorFlow-wide
            # setting; unverified on a GPU (none with TensorFlow was at hand).
            tf.config.experimental.enable_tensor_float_32_execution(False)
        self.device = device
        self._tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
        if threads:
            _set_threads(threads)
        path = Path(folder) / SAVED_MODEL_DIR
        # TensorFlow reads a folder, not bytes: it loads a private copy of the listed files, hashed while
        # copied, so nothing unlisted or swapped after the check is ever read.
        with tempfile.TemporaryDirectory(prefix="featuremaps-tf-") as private:
            for rel in listed_files(manifest, Path(folder), only=[SAVED_MODEL_DIR]):
                try:
                    copy_verified(Path(folder), rel, manifest.files[rel], Path(private) / rel)
                except OSError as exc:
                    raise ArtifactError(f"cannot copy {rel!r} to a private folder in {tempfile.gettempdir()!r} "
                                        f"for loading: {exc.strerror or exc}") from None
            try:
                with tf.device(self._tf_device):
                    self._loaded = tf.saved_model.load(os.fspath(Path(private) / SAVED_MODEL_DIR))
                self._fn = self._loaded.signatures[SIGNATURE]
            except (OSError, KeyError, ValueError, tf.errors.OpError) as exc:
                message = " ".join(str(exc).replace(private, str(folder)).split())
                raise ArtifactError(f"TensorFlow cannot load signature {SIGNATURE!r} from {path}: {message}") from None
        inputs = list(self._fn.structured_input_signature[1])
        names = list(self._fn.structured_outputs)
        if inputs != [INPUT_NAME] or sorted(names) != sorted(manifest.output_names):
            raise ArtifactError(f"{path} has inputs {inputs} and outputs {names}; the manifest lists "
                                f"{[INPUT_NAME]} and {manifest.output_names}")
        self.providers = [self._tf_device]

    @staticmethod
    def gpu_missing() -> str | None:
        if tf.config.list_physical_devices("GPU"):
            return None
        return ("TensorFlow sees no GPU physical device; to use one, install TensorFlow with CUDA "
                "(`pip install \"tensorflow[and-cuda]\"`, Linux) and an NVIDIA driver (`nvidia-smi` must list the GPU)")

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"] if cls.gpu_missing() else ["cpu", "gpu"]

    def run(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        with tf.device(self._tf_device):
            result = self._fn(**{INPUT_NAME: tf.constant(batch)})
        return {name: result[name].numpy() for name in names}

    def close(self) -> None:
        self._fn = self._loaded = None


def _set_threads(threads: int) -> None:
    """Size TensorFlow's thread pools: process-wide, and only possible before TensorFlow first runs anything."""
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow fixes its pools at first use; say so rather than run with other threads unnoticed.
        current = threading.get_intra_op_parallelism_threads()
        warnings.warn(
            f"threads={threads} ignored: TensorFlow's thread pools are already initialised in this process "
            f"(intra-op threads {current or 'default (one per core)'}, inter-op threads "
            f"{threading.get_inter_op_parallelism_threads() or 'default'}); pass threads to the first "
            "TensorFlow model loaded in the process",
            RuntimeWarning,
            stacklevel=4,  # the caller of runtime.load
        )
