"""`run` and `stats` jobs called from Python (options dataclasses): what the CLI writes, errors naming parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.cli.main import main
from runtime.cli.process import run_cli
from runtime.errors import DataError
from runtime.jobs.dataset_stats import StatsOptions, dataset_stats
from runtime.jobs.extract import ExtractOptions, ExtractResult, extract


@pytest.fixture
def digits_npy(tmp_path, digits) -> Path:
    path = tmp_path / "digits.npy"
    np.save(path, digits[0][:20])
    return path


def read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_extract_writes_what_the_cli_writes(tmp_path, digits_npy, reference_artifacts, capsys):
    result = extract(ExtractOptions(artifacts=reference_artifacts, inputs=[digits_npy], out=tmp_path / "py.npz",
                                    batch_size=8, outputs=["conv2d", "dense_1"]))
    assert isinstance(result, ExtractResult)
    assert (result.out, result.images, result.where) == (tmp_path / "py.npz", 20, "onnx on cpu")
    assert result.shapes == {"conv2d": (20, 26, 26, 32), "dense_1": (20, 10)} and result.seconds > 0
    assert run_cli(main, ["run", str(reference_artifacts), "--input", str(digits_npy), "--out",
                          str(tmp_path / "cli.npz"), "--batch-size", "8", "--outputs", "conv2d,dense_1"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'cli.npz'}: 20 images, conv2d [20, 26, 26, 32], ")
    py, cli = read_npz(tmp_path / "py.npz"), read_npz(tmp_path / "cli.npz")
    assert list(py) == list(cli) == ["conv2d", "dense_1"]
    for name in py:
        np.testing.assert_array_equal(py[name], cli[name])


def test_one_input_path_need_not_be_a_list(tmp_path, digits_npy, reference_artifacts):
    result = extract(ExtractOptions(artifacts=str(reference_artifacts), inputs=str(digits_npy),
                                    out=str(tmp_path / "a.zarr"), outputs=["dense_1"]))
    assert result.images == 20 and result.shapes == {"dense_1": (20, 10)}


def test_job_errors_name_parameters_not_flags(tmp_path, digits_npy, reference_artifacts):
    with pytest.raises(DataError, match=r"^`out` '.*acts' must end in \.npz"):
        extract(ExtractOptions(artifacts=reference_artifacts, inputs=[digits_npy], out=tmp_path / "acts"))
    with pytest.raises(DataError, match=r"^`compress=True` applies to \.npz output"):
        extract(ExtractOptions(artifacts=reference_artifacts, inputs=[digits_npy], out=tmp_path / "a.zarr",
                               compress=True))
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 28, 28), np.uint8), b=np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(DataError, match="choose one with `key`$"):
        extract(ExtractOptions(artifacts=reference_artifacts, inputs=[tmp_path / "two.npz"], out=tmp_path / "b.npz"))
    (tmp_path / "notes").write_text("x")
    with pytest.raises(DataError, match=r"^`out` '.*notes' exists and is not a stats folder"):
        dataset_stats(StatsOptions(artifacts=reference_artifacts, inputs=[digits_npy], out=tmp_path / "notes"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.npy", "notes", "two.npz"]


def test_dataset_stats_returns_the_stats_it_wrote(tmp_path, digits_npy, reference_artifacts):
    result = dataset_stats(StatsOptions(artifacts=reference_artifacts, inputs=[digits_npy], out=tmp_path / "stats",
                                        k=3, batch_size=7, quiet=True))
    assert result.out == tmp_path / "stats" and result.stats.images == 20 and result.seconds > 0
    doc = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert doc == json.loads(json.dumps(result.stats.to_json())) and doc["k"] == 3 and doc["images"] == 20
