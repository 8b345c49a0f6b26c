"""Shared fixtures: MNIST, the shipped reference model's artifacts, and a zoo of other exported models."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

# A test run started in the background (`nohup ... &`, some CI runners) ignores SIGINT, and the
# processes the tests start inherit that: the Ctrl-C tests need it delivered, as from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)

# The environment (MNIST_NPZ, log levels, Agg) is set in the top-level conftest.py.

# Artifacts exported elsewhere (`python -m benchmarks.gpu export DIR`), one folder per model name, so that the
# runtime's tests run where TensorFlow cannot be installed, e.g. on a GPU machine.
PREEXPORTED = "FEATUREMAPS_TEST_ARTIFACTS"


def preexported(name: str) -> Path | None:
    """$FEATUREMAPS_TEST_ARTIFACTS/<name>, or None when the variable is unset.

    Its schema is checked here, the sha256s of the files a backend loads by runtime.load.
    """
    root = os.environ.get(PREEXPORTED)
    if not root:
        return None
    from runtime import read_manifest

    read_manifest(Path(root) / name, verify_files=False)
    return Path(root) / name


@pytest.fixture(scope="session")
def preexported_artifacts():
    """preexported(name), for fixtures elsewhere that must know whether artifacts came from outside."""
    return preexported


@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    path = os.environ.get("MNIST_NPZ")
    if not path or not Path(path).is_file():
        pytest.skip("full MNIST not available: set MNIST_NPZ to Keras' mnist.npz")
    return Path(path)


@pytest.fixture(scope="session")
def mnist_test(mnist_npz):
    """(x_test uint8 [10000,28,28], y_test) from the full data set."""
    with np.load(mnist_npz) as f:
        return f["x_test"], f["y_test"]


@pytest.fixture(scope="session")
def digits():
    """The MNIST test digits shipped with the project: (uint8 [64,28,28], labels)."""
    from runtime.data.mnist import shipped_digits

    return shipped_digits()


@pytest.fixture(scope="session")
def reference_model_path() -> Path:
    from export.reference import REFERENCE_MODEL

    return REFERENCE_MODEL


@pytest.fixture(scope="session")
def reference_artifacts(tmp_path_factory, request) -> Path:
    """Artifacts of the shipped reference CNN, exported once per session (verified on MNIST when present)."""
    return preexported("reference") or export_to(request.getfixturevalue("reference_model_path"),
                                                 tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="session")
def zoo_model_file(tmp_path_factory, digits):
    """name -> path of a small trained .keras model from tests/zoo.py, built once per session."""
    from zoo import ZOO, train_briefly

    folder = tmp_path_factory.mktemp("zoo")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            x, y = digits
            model = train_briefly(ZOO[name](), x, y)
            cache[name] = folder / f"{name}.keras"
            model.save(cache[name])
        return cache[name]

    return get


@pytest.fixture(scope="session")
def zoo_artifacts(tmp_path_factory, zoo_model_file):
    """name -> artifacts folder of a zoo model, exported once per session."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = preexported(name) or export_to(zoo_model_file(name), tmp_path_factory.mktemp(f"zoo_{name}"))
        return cache[name]

    return get


def export_to(model_file: Path, folder: Path) -> Path:
    from export.pipeline import export_model

    export_model(model_file, folder / "artifacts")
    return folder / "artifacts"


@pytest.fixture(scope="session")
def reference_stats(tmp_path_factory, reference_artifacts, digits) -> Path:
    """`runtime stats` of the reference model over the 64 shipped digits, top 3: the gallery's input."""
    from runtime.jobs.stats import stats

    out = tmp_path_factory.mktemp("reference_stats") / "stats"
    stats(str(reference_artifacts), digits[0], k=3).write(out)
    return out
