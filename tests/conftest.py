"""Shared fixtures: MNIST, the shipped reference model's artifacts, and a zoo of other exported models."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The environment (MNIST_NPZ, log levels, Agg) is set in the top-level conftest.py.


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
    from runtime.mnist import shipped_digits

    return shipped_digits()


@pytest.fixture(scope="session")
def reference_model_path() -> Path:
    from export.reference import REFERENCE_MODEL

    return REFERENCE_MODEL


@pytest.fixture(scope="session")
def reference_artifacts(tmp_path_factory, reference_model_path) -> Path:
    """Artifacts of the shipped reference CNN, exported once per session (verified on MNIST when present)."""
    from export.pipeline import export_model

    out = tmp_path_factory.mktemp("reference") / "artifacts"
    export_model(reference_model_path, out)
    return out


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
    from export.pipeline import export_model

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = tmp_path_factory.mktemp(f"zoo_{name}") / "artifacts"
            export_model(zoo_model_file(name), cache[name])
        return cache[name]

    return get
