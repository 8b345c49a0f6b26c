"""Fixtures of the runtime tests: the backend parameter, models loaded once per session, Keras references."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime

BACKENDS = ["onnx", "tf"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every test taking `backend` runs once per backend: a new backend must pass them all.

    A backend that is not installed skips (e.g. tf on a GPU machine without TensorFlow).
    """
    if request.param not in runtime.installed_backends():
        pytest.skip(f"backend {request.param!r} is not installed here")
    return request.param


@pytest.fixture(scope="session")
def loaded():
    """(artifacts folder, backend) -> a Model loaded once per session. Tests must not close it."""
    cache: dict[tuple, runtime.Model] = {}

    def get(folder: Path, backend: str) -> runtime.Model:
        key = (str(folder), backend)
        if key not in cache:
            cache[key] = runtime.load(folder, backend=backend)
        return cache[key]

    yield get
    for model in cache.values():
        model.close()


@pytest.fixture
def ref_model(loaded, reference_artifacts, backend) -> runtime.Model:
    """The reference MNIST CNN on the parametrised backend (shared: do not close)."""
    return loaded(reference_artifacts, backend)


@pytest.fixture(scope="session")
def keras_outputs():
    """(Keras model file, manifest) -> function: float batch -> {output name: array} from the original model.

    Built from the trained .keras file directly, not through the exporter, so that the
    comparison checks the artifacts against the model the user trained.
    """
    cache: dict[str, object] = {}

    def get(model_file: Path, manifest: runtime.Manifest):
        if str(model_file) not in cache:
            import keras

            model = keras.models.load_model(model_file, compile=False)
            cache[str(model_file)] = keras.Model(model.inputs[0], [model.get_layer(o.layer).output for o in manifest.outputs])
        sub = cache[str(model_file)]

        def run(batch: np.ndarray) -> dict[str, np.ndarray]:
            outs = sub(batch, training=False)
            return {o.name: np.asarray(v) for o, v in zip(manifest.outputs, outs)}

        return run

    return get


@pytest.fixture
def artifacts_copy(tmp_path, reference_artifacts) -> Path:
    """A private copy of the reference artifacts, free to tamper with (the session fixture never is)."""
    return Path(shutil.copytree(reference_artifacts, tmp_path / "artifacts"))
