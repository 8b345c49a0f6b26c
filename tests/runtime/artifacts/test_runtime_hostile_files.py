"""Untrusted artifacts folders: nothing outside the folder is read, and the bytes hashed are the bytes loaded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.artifacts.hashing import tree_files
from runtime.cli.main import main as runtime_main
from runtime.cli.process import run_cli
from runtime.errors import ArtifactError


def edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("victim", ["../../escaped", "/abs/victim"])
def test_run_refuses_output_names_that_are_paths(capsys, tmp_path, artifacts_copy, digits, victim):
    edit_manifest(artifacts_copy, lambda d: d["outputs"][1].update(name=victim))
    np.save(tmp_path / "digits.npy", digits[0][:4])
    out = tmp_path / "a" / "b" / "acts.npz"
    out.parent.mkdir(parents=True)
    before = listing(tmp_path)
    code = run_cli(runtime_main, ["run", str(artifacts_copy), "--input", str(tmp_path / "digits.npy"),
                                  "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is not allowed" in err and victim in err
    assert listing(tmp_path) == before  # nothing written, no temp file left


def test_outside_paths_are_refused_alike_whether_they_exist_or_not(capsys, tmp_path, artifacts_copy):
    """'missing' vs 'mismatch' would tell an attacker which outside files exist: the text is refused first."""
    (tmp_path / "exists.bin").write_bytes(b"secret")
    messages = []
    for target in ["../exists.bin", "../absent.bin"]:
        edit_manifest(artifacts_copy, lambda d, target=target: d["files"].update(
            {f"saved_model/{target}": {"sha256": "0" * 64, "bytes": 6}}))
        assert run_cli(runtime_main, ["info", str(artifacts_copy)]) == 2
        messages.append(capsys.readouterr().err.replace(target, "X"))
        edit_manifest(artifacts_copy, lambda d, target=target: d["files"].pop(f"saved_model/{target}"))
    assert messages[0] == messages[1] and "leaves the folder" in messages[0]


@pytest.mark.parametrize("rel, backend", [("model.onnx", "onnx"), ("saved_model/variables/variables.index", "tf")])
def test_symlinks_leading_outside_are_refused_even_with_the_right_content(tmp_path, artifacts_copy, rel, backend):
    outside = tmp_path / "outside.bin"
    shutil.copy(artifacts_copy / rel, outside)  # same bytes, same sha256: only the link is wrong
    (artifacts_copy / rel).unlink()
    (artifacts_copy / rel).symlink_to(outside)
    with pytest.raises(ArtifactError, match="leads outside the folder"):
        runtime.load(artifacts_copy, backend=backend)
    (artifacts_copy / rel).unlink()
    (artifacts_copy / rel).symlink_to(tmp_path / "absent.bin")
    with pytest.raises(ArtifactError, match="leads outside the folder"):
        runtime.load(artifacts_copy, backend=backend)


def test_onnx_model_swapped_after_the_check_is_never_loaded(artifacts_copy, reference_artifacts, digits, loaded,
                                                            monkeypatch):
    """The swap comes at the worst moment, just before onnxruntime builds its session: the hashed bytes win."""
    import onnxruntime

    real = onnxruntime.InferenceSession
    evil = _biased_onnx(artifacts_copy / "model.onnx")

    def swap_then_build(model, *args, **kwargs):
        (artifacts_copy / "model.onnx").write_bytes(evil)
        return real(model, *args, **kwargs)

    expected = loaded(reference_artifacts, "onnx").run(digits[0][:4])["conv2d"]  # before the trap is set
    monkeypatch.setattr(onnxruntime, "InferenceSession", swap_then_build)
    with runtime.load(artifacts_copy) as model:
        assert np.array_equal(model.run(digits[0][:4])["conv2d"], expected)


def test_saved_model_swapped_after_the_check_is_never_loaded(artifacts_copy, digits, loaded, reference_artifacts,
                                                             monkeypatch):
    import tensorflow as tf

    real = tf.saved_model.load
    data = next((artifacts_copy / "saved_model" / "variables").glob("variables.data-*"))

    def swap_then_load(path, *args, **kwargs):
        data.write_bytes(b"\0" * data.stat().st_size)  # every weight zero, same size
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tf.saved_model, "load", swap_then_load)
    with runtime.load(artifacts_copy, backend="tf") as model:
        expected = loaded(reference_artifacts, "onnx").run(digits[0][:4])["dense_1"]
        assert np.allclose(model.run(digits[0][:4])["dense_1"], expected, atol=1e-5)


def test_onnx_external_data_is_hashed_and_confined(tmp_path, artifacts_copy, digits, loaded, reference_artifacts,
                                                    monkeypatch):
    import onnx

    proto = onnx.load(artifacts_copy / "model.onnx")
    onnx.save(proto, artifacts_copy / "model.onnx", save_as_external_data=True, location="model.onnx.data",
              size_threshold=256)
    data = artifacts_copy / "model.onnx.data"

    def relist(external):
        edit_manifest(artifacts_copy, lambda d: (d["files"].update(tree_files(artifacts_copy)),
                                                 d["onnx"].update(external_data=external)))

    relist(["model.onnx.data"])
    expected = loaded(reference_artifacts, "onnx").run(digits[0][:4])
    with runtime.load(artifacts_copy) as model:  # weights outside model.onnx, read from the verified bytes
        assert all(np.array_equal(model.run(digits[0][:4])[n], expected[n]) for n in expected)
    original = data.read_bytes()
    data.write_bytes(_biased_bytes(original))  # weights swapped, same size
    with pytest.raises(ArtifactError, match="'model.onnx.data' does not match the manifest's sha256"):
        runtime.load(artifacts_copy)
    data.write_bytes(original)
    relist([])  # listed among the files, but not declared as external data: never read from disk
    monkeypatch.chdir(artifacts_copy)  # not even from the working folder, where the file lies
    with pytest.raises(ArtifactError, match="external data"):
        runtime.load(artifacts_copy)


def _biased_bytes(data: bytes) -> bytes:
    arr = np.frombuffer(data, np.uint8).copy()
    arr[len(arr) // 2:len(arr) // 2 + 64] ^= 0x55
    return arr.tobytes()


def _biased_onnx(path: Path) -> bytes:
    """The same graph with 1000 added to every bias: a valid, wrong model."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 1:
            init.CopyFrom(numpy_helper.from_array(arr + 1000, init.name))
    return proto.SerializeToString()
