"""`python -m runtime triton` and runtime.serve.triton: config.pbtxt parsed with Triton's own protobuf schema
agrees with the manifest; the library names its parameters."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from runtime.artifacts.manifest import read_manifest
from runtime.cli.main import main
from runtime.cli.process import run_cli
from runtime.errors import UsageError
from runtime.serve.triton import TritonOptions, config_text, write_repository


def triton_cli(capsys, *argv) -> tuple[int, str, str]:
    code = run_cli(main, ["triton", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_config_agrees_with_manifest(capsys, tmp_path, reference_artifacts):
    repo = tmp_path / "model_repository"
    code, out, err = triton_cli(capsys, reference_artifacts, "--out", repo, "--max-batch", "32",
                                "--max-delay-ms", "0.5", "--instances", "2", "--kind", "cpu")
    assert code == 0, err
    manifest = read_manifest(reference_artifacts)
    name = manifest.source_model["name"]
    assert "docker run" in out and str(repo / name / "config.pbtxt") in out
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")) == [
        name, f"{name}/1", f"{name}/1/model.onnx", f"{name}/config.pbtxt"]  # nothing else, no temp folders
    assert (repo / name / "1" / "model.onnx").read_bytes() == (reference_artifacts / "model.onnx").read_bytes()
    config = parse(repo / name / "config.pbtxt")
    assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    (inp,) = config.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("image", model_config_pb2.TYPE_FP32, [28, 28, 1])
    assert [(o.name, o.data_type, tuple(o.dims)) for o in config.output] == [
        (o.name, model_config_pb2.TYPE_FP32, tuple(o.shape[1:])) for o in manifest.outputs]  # all, in order
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_existing_model_needs_force_and_others_are_kept(capsys, tmp_path, reference_artifacts):
    repo = tmp_path / "repo"
    (repo / "other_model" / "1").mkdir(parents=True)
    (repo / "other_model" / "config.pbtxt").write_text('name: "other_model"\n')
    assert triton_cli(capsys, reference_artifacts, "--out", repo, "--name", "digits")[0] == 0
    code, _, err = triton_cli(capsys, reference_artifacts, "--out", repo, "--name", "digits", "--max-batch", "8")
    assert code == 2 and "--force" in err and err.count("\n") == 1
    assert parse(repo / "digits" / "config.pbtxt").max_batch_size == 64  # unchanged
    assert triton_cli(capsys, reference_artifacts, "--out", repo, "--name", "digits", "--max-batch", "8",
                      "--force")[0] == 0
    assert parse(repo / "digits" / "config.pbtxt").max_batch_size == 8
    assert sorted(p.name for p in repo.iterdir()) == ["digits", "other_model"]  # no leftovers
    assert (repo / "other_model" / "config.pbtxt").read_text() == 'name: "other_model"\n'

    (repo / "notes").mkdir()
    (repo / "notes" / "keep.txt").write_text("mine")
    code, _, err = triton_cli(capsys, reference_artifacts, "--out", repo, "--name", "notes", "--force")
    assert code == 2 and "not a Triton model" in err and (repo / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_model_name_is_confined(capsys, tmp_path, reference_artifacts, name):
    repo = tmp_path / "repo"
    code, _, err = triton_cli(capsys, reference_artifacts, "--out", repo, "--name", name)
    assert code == 2 and "model name" in err and "--name" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the repository folder


def test_tampered_onnx_is_refused(capsys, tmp_path, reference_artifacts):
    artifacts_copy = Path(shutil.copytree(reference_artifacts, tmp_path / "artifacts"))
    with open(artifacts_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    code, _, err = triton_cli(capsys, artifacts_copy, "--out", tmp_path / "repo")
    assert code == 2 and "sha256" in err and not (tmp_path / "repo").exists()


def test_library_names_parameters(tmp_path, reference_artifacts):
    with pytest.raises(UsageError, match=r"`kind` in \['auto', 'cpu', 'gpu'\]; got 64, 1, 0, 'tpu'"):
        TritonOptions(kind="tpu")
    with pytest.raises(UsageError, match="`max_batch` >= 1, `instances` >= 1"):
        TritonOptions(instances=0)
    repo = tmp_path / "repo"
    folder = write_repository(reference_artifacts, repo)  # the manifest's name, the defaults
    manifest = read_manifest(reference_artifacts)
    assert folder == repo / manifest.source_model["name"]
    assert (folder / "config.pbtxt").read_text() == config_text(manifest, folder.name)
    assert parse(folder / "config.pbtxt").max_batch_size == 64
    with pytest.raises(UsageError, match="exists; pass `force=True` to replace it"):
        write_repository(reference_artifacts, repo)
    assert write_repository(reference_artifacts, repo, TritonOptions(max_batch=8, force=True)) == folder
    assert parse(folder / "config.pbtxt").max_batch_size == 8
    with pytest.raises(UsageError, match="pass `name`"):
        write_repository(reference_artifacts, repo, TritonOptions(name="../up"))
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="`out` '.*file' exists and is not a folder"):
        write_repository(reference_artifacts, tmp_path / "file")
