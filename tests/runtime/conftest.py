"""Fixtures of the runtime tests: the backend parameter, models loaded once per session, Keras references."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import runtime

BACKENDS = ["onnx", "tf"]
ROOT = Path(__file__).resolve().parents[2]


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
            cache[str(model_file)] = keras.Model(model.inputs[0],
                                                 [model.get_layer(o.layer).output for o in manifest.outputs])
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


@pytest.fixture
def many_images(tmp_path) -> Path:
    """tmp_path/many.npy: 60,000 images, so that a `run` over it is still going when a test signals it."""
    images = np.lib.format.open_memmap(tmp_path / "many.npy", "w+", np.uint8, (60_000, 28, 28))
    images[:] = 7
    images.flush()
    return tmp_path / "many.npy"


@pytest.fixture
def signalled_run():
    """run(argv, ready, sig, env): `python -m runtime run *argv`, sent sig once ready() is true; (exit code, stderr)."""

    def run(argv: list, ready, sig: int = signal.SIGTERM, env: dict | None = None) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, "-m", "runtime", "run", *map(str, argv)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err

    return run
