"""Integrity on load: schema version and every artifact's sha256 are checked before any inference."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
import runtime.api
from runtime.artifacts.manifest import SCHEMA_VERSION, Manifest, read_manifest
from runtime.errors import ArtifactError


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF  # same size: only the sha256 can tell
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def variables_data(folder: Path) -> Path:
    return next((folder / "saved_model" / "variables").glob("variables.data-*"))


ONNX, TF = {"onnx"}, {"tf"}
# case -> (damage, expected message, backends that must refuse it: each hashes only the files it loads)
TAMPERING = {
    "onnx byte flipped": (lambda f: flip_byte(f / "model.onnx"), "'model.onnx' does not match the manifest's sha256",
                          ONNX),
    "onnx truncated": (lambda f: truncate(f / "model.onnx"), "'model.onnx' does not match .*tampered or truncated",
                       ONNX),
    "onnx missing": (lambda f: (f / "model.onnx").unlink(), "'model.onnx' listed in the manifest is missing", ONNX),
    "variables byte flipped": (lambda f: flip_byte(variables_data(f)), "'saved_model/variables/variables.data-", TF),
    "variables index missing": (lambda f: (f / "saved_model/variables/variables.index").unlink(),
                                "'saved_model/variables/variables.index' listed in the manifest is missing", TF),
    "saved_model.pb byte flipped": (lambda f: flip_byte(f / "saved_model/saved_model.pb", 0.9),
                                    "'saved_model/saved_model.pb' does not match", TF),
    "schema_version 99": (lambda f: edit_manifest(f, lambda d: d.update(schema_version=99)),
                          f"schema_version is 99; this runtime reads version {SCHEMA_VERSION}", ONNX | TF),
    "no schema_version": (lambda f: edit_manifest(f, lambda d: d.pop("schema_version")), "schema_version is None",
                          ONNX | TF),
    "corrupt JSON": (lambda f: truncate(f / "manifest.json"), "manifest.json is not readable JSON", ONNX | TF),
    "manifest missing": (lambda f: (f / "manifest.json").unlink(), r"no manifest.json in .*found \['model.onnx'",
                         ONNX | TF),
    "outputs missing": (lambda f: edit_manifest(f, lambda d: d.pop("outputs")),
                        f"does not follow schema version {SCHEMA_VERSION}", ONNX | TF),
    "unknown field": (lambda f: edit_manifest(f, lambda d: d.update(surprise=1)), "does not follow schema version",
                      ONNX | TF),
    "no files listed": (lambda f: edit_manifest(f, lambda d: d.update(files={})), "lists no artifact files", ONNX | TF),
    "onnx not listed": (lambda f: edit_manifest(f, lambda d: d["files"].pop("model.onnx")),
                        "lists no sha256 for 'model.onnx'", ONNX),
    "file entry without sha256": (lambda f: edit_manifest(f, lambda d: d["files"]["model.onnx"].pop("sha256")),
                                  r"files\['model.onnx'\] must be an object with exactly 'bytes' and 'sha256'",
                                  ONNX | TF),
    "folder missing": (lambda f: shutil.rmtree(f), "does not exist .*python -m export", ONNX | TF),
    "folder is a file": (lambda f: (shutil.rmtree(f), f.write_text("x")), "is not a folder", ONNX | TF),
}


@pytest.mark.parametrize("case", TAMPERING, ids=str)
def test_damaged_artifacts_fail_on_load(case, artifacts_copy, backend):
    damage, message, refused_by = TAMPERING[case]
    damage(artifacts_copy)
    if backend in refused_by:
        with pytest.raises(ArtifactError, match=message):
            runtime.load(artifacts_copy, backend=backend)
    else:  # damage to the other backend's files does not stop this one
        with runtime.load(artifacts_copy, backend=backend) as model:
            assert model.run(np.zeros((1, 28, 28), np.uint8))["dense_1"].shape == (1, 10)


def test_onnx_only_deployment(tmp_path, reference_artifacts, digits):
    """manifest.json + model.onnx alone are a complete deployment for the onnx backend."""
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(reference_artifacts / name, tmp_path / name)
    with runtime.load(tmp_path) as model, runtime.load(reference_artifacts) as full:
        assert np.array_equal(model.run(digits[0][:3])["conv2d"], full.run(digits[0][:3])["conv2d"])
    with pytest.raises(ArtifactError, match="'saved_model/.*' listed in the manifest is missing"):
        runtime.load(tmp_path, backend="tf")


def test_integrity_is_checked_before_any_backend_is_touched(artifacts_copy, monkeypatch):
    import onnxruntime

    flip_byte(artifacts_copy / "model.onnx")

    def tripwire(*args, **kwargs):
        raise AssertionError("onnxruntime was given tampered artifacts")

    monkeypatch.setattr(onnxruntime, "InferenceSession", tripwire)
    with pytest.raises(ArtifactError, match="does not match the manifest's sha256"):
        runtime.load(artifacts_copy)


def test_a_manifest_that_disagrees_with_the_model_files_is_an_error(artifacts_copy, backend):
    # A manifest edited to name other outputs (files untouched): the backend's own check catches it.
    edit_manifest(artifacts_copy, lambda d: d["outputs"][1].update(name="renamed"))
    with pytest.raises(ArtifactError, match="renamed"):
        runtime.load(artifacts_copy, backend=backend)


def test_an_intact_copy_loads_and_unlisted_files_are_ignored(artifacts_copy, digits):
    (artifacts_copy / "README.txt").write_text("notes beside the artifacts")
    with runtime.load(artifacts_copy) as model:
        assert model.run(digits[0][:2])["dense_1"].shape == (2, 10)


def test_read_manifest_round_trips_and_can_skip_file_checks(artifacts_copy, reference_artifacts):
    manifest = read_manifest(reference_artifacts)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert manifest.schema_version == SCHEMA_VERSION and set(manifest.files) >= {"model.onnx"}
    flip_byte(artifacts_copy / "model.onnx")
    assert read_manifest(artifacts_copy, verify_files=False).output_names == manifest.output_names


def test_version_1_manifests_are_still_read(artifacts_copy, digits):
    """Schema 2 widened the input (rank 3-6, integer dtypes, values taken as given); version 1 keeps its rules."""
    edit_manifest(artifacts_copy, lambda d: d.update(schema_version=1))
    with runtime.load(artifacts_copy) as model:
        assert model.manifest.schema_version == 1 and model.run(digits[0][:2])["conv2d"].shape[0] == 2
    edit_manifest(artifacts_copy, lambda d: d["input"].update(layout="NWC", shape=[None, 28, 28]))
    with pytest.raises(ArtifactError, match=r"input.layout must be one of \['NHWC'\]"):
        read_manifest(artifacts_copy, verify_files=False)
    edit_manifest(artifacts_copy, lambda d: d.update(schema_version=2))
    assert read_manifest(artifacts_copy, verify_files=False).input.layout == "NWC"
