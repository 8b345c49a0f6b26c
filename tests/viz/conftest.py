"""Fixtures of the viz tests: Agg only, small fake manifests, MNIST limited to the shipped digits."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")  # the library never uses pyplot; this guards the tests that do

from runtime.artifacts.manifest import InputSpec, Manifest, OutputSpec, Preprocessing  # noqa: E402


def make_manifest() -> Manifest:
    """A manifest shaped like the reference model's: two feature maps and the dense output."""
    spec = InputSpec("image", "float32", (None, 28, 28, 1), "NHWC", Preprocessing())
    outputs = [
        OutputSpec("dense_1", "dense_1", "Dense", (None, 10), "NC", "model_output"),
        OutputSpec("conv2d", "conv2d", "Conv2D", (None, 26, 26, 32), "NHWC", "feature_map"),
        OutputSpec("conv2d_1", "conv2d_1", "Conv2D", (None, 11, 11, 64), "NHWC", "feature_map"),
    ]
    return Manifest(input=spec, outputs=outputs)


class FakeModel:
    """Stands in for runtime.Model: same attributes, outputs derived from the image (deterministic)."""

    def __init__(self):
        self.manifest = make_manifest()
        self.input_spec = self.manifest.input
        self.output_names = self.manifest.output_names
        self.calls = []

    def run(self, images, outputs=None):
        from runtime.preprocess import to_batch

        x = to_batch(images, self.input_spec)
        self.calls.append(list(outputs))
        rng = np.random.default_rng(int(x.sum() * 1000) % 2**32)
        return {n: rng.random((len(x), *self.manifest.output(n).shape[1:]), dtype=np.float32) for n in outputs}


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def shipped_digits_only(monkeypatch, tmp_path):
    """MNIST lookups find only the 64 digits shipped with the project (no $MNIST_NPZ, empty Keras cache)."""
    monkeypatch.delenv("MNIST_NPZ", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
