"""MNIST, found offline first: the digits shipped with the project, then the full data set.

The full set is looked up in order: an explicit path, the MNIST_NPZ environment
variable, the Keras cache, else the real Keras download (same URL and sha256 as
`keras.datasets.mnist.load_data`).
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from runtime.artifacts.atomic import atomic_write
from runtime.errors import DataError

SHIPPED_DIGITS = Path(__file__).parent / "mnist_test_digits.npz"
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
KEYS = ("x_train", "y_train", "x_test", "y_test")


def shipped_digits() -> tuple[np.ndarray, np.ndarray]:
    """The first MNIST test digits shipped with the project: (uint8 [N,28,28], uint8 labels [N])."""
    with np.load(SHIPPED_DIGITS, allow_pickle=False) as f:
        return f["x_test"], f["y_test"]


MNIST_SHAPE = (28, 28, 1)


def resize_digits(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 digits [N,28,28] -> [N,H,W,C] for a model of another input shape: nearest-neighbour resized and
    repeated over channels. The export verifies such models on the shipped digits so resized, and `python -m
    viz --index` draws them so."""
    h, w, c = shape
    rows = np.arange(h) * x.shape[1] // h
    cols = np.arange(w) * x.shape[2] // w
    return np.repeat(x[:, rows][:, :, cols][..., None], c, axis=-1)


def keras_cache_path() -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets" / "mnist.npz"


def find_mnist(path: str | os.PathLike | None = None, download: bool = True) -> Path | None:
    """Locate mnist.npz: explicit path, $MNIST_NPZ, Keras cache, else download (when allowed).

    Returns None when nothing is found and download is False.

    Raises:
        DataError: an explicitly given path does not exist, or the download fails.
    """
    for source, candidate in (("`path`", path), ("MNIST_NPZ", os.environ.get("MNIST_NPZ"))):
        if candidate:
            if not Path(candidate).is_file():
                raise DataError(f"MNIST file from {source} not found: {candidate} (expected Keras' mnist.npz)")
            return Path(candidate)
    cached = keras_cache_path()
    if cached.is_file():
        return cached
    return _download(cached) if download else None


def _download(target: Path) -> Path:
    hint = "point at a local copy with `path` or the MNIST_NPZ environment variable"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(target) as out, urllib.request.urlopen(KERAS_URL, timeout=30) as resp:
            digest = hashlib.sha256()
            for block in iter(lambda: resp.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
            if digest.hexdigest() != KERAS_SHA256:
                raise DataError(f"downloaded MNIST from {KERAS_URL} failed its sha256 check; {hint}")
        return target
    except OSError as exc:
        raise DataError(f"MNIST not found locally and the download from {KERAS_URL} failed ({exc}); {hint}") from None


def load_mnist(path: str | os.PathLike | None = None, download: bool = True) -> dict[str, np.ndarray] | None:
    """The full MNIST arrays (x_train, y_train, x_test, y_test), or None if absent and download is False.

    Raises:
        DataError: the file is missing, unreadable, or lacks the MNIST arrays.
    """
    found = find_mnist(path, download=download)
    if found is None:
        return None
    try:
        with np.load(found, allow_pickle=False) as f:
            return {k: f[k] for k in KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{found} is not a readable MNIST npz with arrays {list(KEYS)}: {exc}") from None


def mnist_test_set(path: str | os.PathLike | None = None, download: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """MNIST test digits: the full test set when available, else the shipped ones.

    Returns (images uint8 [N,28,28], labels [N], a description of the source).
    """
    data = load_mnist(path, download=download)
    if data is None:
        x, y = shipped_digits()
        return x, y, f"{len(x)} MNIST test digits shipped with featuremaps"
    return data["x_test"], data["y_test"], f"MNIST test set ({len(data['x_test'])} digits)"
