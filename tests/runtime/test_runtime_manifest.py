"""Integrity on load: schema version and every artifact's sha256 are checked before any inference."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import runtime
import runtime.api
from runtime.errors import ArtifactError
from runtime.manifest import SCHEMA_VERSION, Manifest, read_manifest


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


TAMPERING = {
    "onnx byte flipped": (lambda f: flip_byte(f / "model.onnx"), "'model.onnx' does not match the manifest's sha256"),
    "onnx truncated": (lambda f: truncate(f / "model.onnx"), "'model.onnx' does not match .* tampered or truncated"),
    "onnx missing": (lambda f: (f / "model.onnx").unlink(), "'model.onnx' listed in the manifest is missing"),
    "variables byte flipped": (lambda f: flip_byte(variables_data(f)), "'saved_model/variables/variables.data-"),
    "variables index missing": (lambda f: (f / "saved_model/variables/variables.index").unlink(),
                                "'saved_model/variables/variables.index' listed in the manifest is missing"),
    "saved_model.pb byte flipped": (lambda f: flip_byte(f / "saved_model/saved_model.pb", 0.9),
                                    "'saved_model/saved_model.pb' does not match"),
    "schema_version 99": (lambda f: edit_manifest(f, lambda d: d.update(schema_version=99)),
                          f"schema_version is 99; this runtime reads version {SCHEMA_VERSION}"),
    "no schema_version": (lambda f: edit_manifest(f, lambda d: d.pop("schema_version")), "schema_version is None"),
    "corrupt JSON": (lambda f: truncate(f / "manifest.json"), "manifest.json is not readable JSON"),
    "manifest missing": (lambda f: (f / "manifest.json").unlink(), r"no manifest.json in .*found \['model.onnx'"),
    "outputs missing": (lambda f: edit_manifest(f, lambda d: d.pop("outputs")),
                        f"does not follow schema version {SCHEMA_VERSION}"),
    "unknown field": (lambda f: edit_manifest(f, lambda d: d.update(surprise=1)), "does not follow schema version"),
    "no files listed": (lambda f: edit_manifest(f, lambda d: d.update(files={})), "lists no artifact files"),
    "file entry without sha256": (lambda f: edit_manifest(f, lambda d: d["files"]["model.onnx"].pop("sha256")),
                                  "entry 'model.onnx' of 'files' lacks 'bytes' and 'sha256'"),
    "folder missing": (lambda f: shutil.rmtree(f), "does not exist .*python -m export"),
    "folder is a file": (lambda f: (shutil.rmtree(f), f.write_text("x")), "is not a folder"),
}


@pytest.mark.parametrize("case", TAMPERING, ids=str)
def test_damaged_artifacts_fail_on_load(case, artifacts_copy, backend):
    damage, message = TAMPERING[case]
    damage(artifacts_copy)
    with pytest.raises(ArtifactError, match=message):
        runtime.load(artifacts_copy, backend=backend)


def test_integrity_is_checked_before_any_backend_is_touched(artifacts_copy, monkeypatch):
    flip_byte(artifacts_copy / "model.onnx")

    def no_backend(name):
        raise AssertionError(f"backend {name!r} reached with tampered artifacts")

    monkeypatch.setattr(runtime.api, "runner_class", no_backend)
    with pytest.raises(ArtifactError):
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
