"""Fixtures of the consistency suite: real digits, and per model its Keras original beside its artifacts.

Every test here compares numbers; the per-output error tables they produce are gathered in
`consistency_report` and printed once at the end of a verbose run (`pytest -v`, pytest_terminal_summary),
so that the measured errors can be read even when everything passes; quiet runs stay short.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest

# Real MNIST test digits compared when the full test set is available (CI has it).
FULL_SET_IMAGES = 2000
BATCH = 250

_REPORT: dict[str, list[tuple]] = {}  # model -> [(comparison, images, diffs, tolerance)], in test order


@dataclass
class Case:
    """One model: its original Keras file and exported artifacts, with the images it is tested on."""

    name: str
    model_file: Path | None  # None for pre-exported artifacts (no Keras comparison possible)
    artifacts: Path
    manifest: object  # runtime.Manifest
    images: np.ndarray  # float32 [N, H, W, C], already preprocessed
    source: str

    @cached_property
    def keras_model(self):
        """keras.Model with dict outputs named as in the manifest; built on first use (needs TensorFlow)."""
        if self.model_file is None:
            pytest.skip(f"{self.name}: artifacts were pre-exported, the Keras original is not here")
        return keras_feature_model(self.model_file, self.manifest)

    @property
    def probabilities(self) -> str:
        """The class-probability output (the model's own output)."""
        return next(o.name for o in self.manifest.outputs if o.role == "model_output")

    def keras(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """All outputs of the original Keras model, called directly (no predict loop)."""
        import tensorflow as tf

        with tf.device("/CPU:0"):  # the reference stays on the CPU (a GPU would run convolutions in TF32)
            return {k: np.asarray(v) for k, v in self.keras_model(batch, training=False).items()}

    def batches(self):
        for start in range(0, len(self.images), BATCH):
            yield self.images[start:start + BATCH]


def keras_feature_model(model_file: Path, manifest):
    """keras.Model(input, {output name: layer output}) built from the original .keras file.

    Built here, independently of export/, so that the tests check the exporter rather than reuse it.
    """
    import keras

    model = keras.models.load_model(model_file, compile=False)
    outputs = {o.name: model.get_layer(o.layer).output for o in manifest.outputs}
    return keras.Model(model.inputs[0], outputs)


@pytest.fixture(scope="session")
def consistency_digits(request, digits):
    """(uint8 [N,28,28], labels, description): the first FULL_SET_IMAGES MNIST test digits, else the shipped ones."""
    try:
        x, y = request.getfixturevalue("mnist_test")
    except pytest.skip.Exception:
        x, y = digits
        return x, y, f"{len(x)} shipped MNIST test digits (full test set not available)"
    return x[:FULL_SET_IMAGES], y[:FULL_SET_IMAGES], f"first {FULL_SET_IMAGES} MNIST test digits"


@pytest.fixture(scope="session")
def consistency_case(request, reference_artifacts, zoo_model_file, zoo_artifacts, consistency_digits,
                     preexported_artifacts):
    """name -> Case, built once per session."""
    from zoo import digits_as

    from runtime import read_manifest
    from runtime.preprocess import to_batch

    cache: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in cache:
            if given := preexported_artifacts(name):
                model_file, folder = None, given
            elif name == "reference":
                model_file, folder = request.getfixturevalue("reference_model_path"), reference_artifacts
            else:
                model_file, folder = zoo_model_file(name), zoo_artifacts(name)
            manifest = read_manifest(folder)
            x, _, source = consistency_digits
            shape = manifest.input.image_shape
            if shape == (28, 28, 1):
                images = to_batch(x, manifest.input)  # uint8 pixels, preprocessed as the manifest declares
            else:
                images = digits_as(shape, x)
                source += f" resized to {'x'.join(map(str, shape))}"
            cache[name] = Case(name, model_file and Path(model_file), Path(folder), manifest, images, source)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def consistency_report():
    """record(model, comparison, images, diffs, tol): kept for the per-model error tables printed at the end."""
    return record_errors


def record_errors(model: str, comparison: str, images: str, diffs: dict, tol) -> None:
    _REPORT.setdefault(model, []).append((comparison, images, dict(diffs), tol))


def error_rows(comparison: str, diffs: dict, tol) -> list[str]:
    return [f"| {comparison} | {name} | {d.max_abs:.3g} | {d.mean_abs:.3g} | {d.max_rel:.3g} | {d.mean_rel:.3g} | "
            f"{tol.atol:g} + {tol.rtol:g}*{d.max_ref:.3g} | {'yes' if d.ok(tol) else 'NO'} |"
            for name, d in diffs.items()]


def error_table(entries) -> str:
    """Markdown table: one row per (comparison, output); relative errors are relative to max |reference|."""
    rows = ["| comparison | output | max abs | mean abs | max rel | mean rel | allowed max abs | ok |",
            "|---|---|---|---|---|---|---|---|"]
    for comparison, images, diffs, tol in entries:
        rows += error_rows(f"{comparison} ({images})", diffs, tol)
    return "\n".join(rows)


def pytest_terminal_summary(terminalreporter, config):
    if not _REPORT:
        return
    verbosity = config.get_verbosity()
    if verbosity < 1:  # about 60 lines of tables: only when asked for
        if verbosity == 0:
            terminalreporter.write_line("consistency: per-output error tables are shown with -v")
        return
    terminalreporter.section("consistency: per-output errors (rel = abs / max |reference|)")
    for model, entries in _REPORT.items():
        terminalreporter.write_line(f"\n{model}")
        terminalreporter.write_line(error_table(entries))
