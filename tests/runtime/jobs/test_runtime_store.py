"""`run` at dataset scale: Zarr v3 stores, inputs (folders, Zarr), row names, atomic replacement, interrupts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from runtime.cli.main import main
from runtime.cli.process import run_cli
from runtime.errors import ArtifactError, DataError
from runtime.jobs.store import ZARR_CODEC, NpzWriter, ZarrWriter, chunk_rows, read_maps

ROOT = Path(__file__).resolve().parents[3]


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def digits_npy(tmp_path, digits) -> Path:
    np.save(tmp_path / "digits.npy", digits[0])
    return tmp_path / "digits.npy"


def test_zarr_store_holds_each_output_chunked_along_the_batch(capsys, tmp_path, digits_npy, digits, loaded,
                                                               reference_artifacts):
    out = tmp_path / "acts.zarr"
    code, stdout, err = cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", out, "--batch-size", 24)
    assert code == 0 and err == "", err
    assert stdout.startswith(f"wrote {out}: 64 images, dense_1 [64, 10], conv2d [64, 26, 26, 32]")
    expected = loaded(reference_artifacts, "onnx").run(digits[0])
    store = zarr.open_group(str(out), mode="r")
    assert sorted(n for n, _ in store.arrays()) == ["conv2d", "conv2d_1", "dense_1"]
    for name, array in expected.items():
        np.testing.assert_array_equal(store[name][:], array)  # the same bits as Model.run
        assert store[name].shards == (24, *array.shape[1:])  # one file per output and batch
        assert store[name].chunks == (chunk_rows(24), *array.shape[1:]) == (24, *array.shape[1:])
        assert store[name].compressors[0].to_dict()["configuration"]["cname"] == ZARR_CODEC["cname"]
    np.testing.assert_array_equal(store["conv2d"][37], expected["conv2d"][37])  # one image, one chunk read
    attrs = store.attrs.asdict()
    assert attrs["complete"] is True and attrs["images"] == 64 and "sources" not in attrs
    assert attrs["outputs"]["conv2d"] == {"layer": "conv2d", "layer_class": "Conv2D", "shape": [None, 26, 26, 32],
                                          "layout": "NHWC", "role": "feature_map"}
    assert attrs["input"]["preprocessing"]["raw_dtype"] == "uint8" and len(attrs["artifacts_sha256"]) == 64
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("suffix", [".zarr", ".npz"])
def test_float16_stores_record_their_dtype_and_read_back_as_float32(capsys, tmp_path, digits_npy, digits, loaded,
                                                                    reference_artifacts, suffix):
    half, full = tmp_path / f"half{suffix}", tmp_path / f"full{suffix}"
    for out, dtype in ((half, "float16"), (full, "float32")):
        code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", out, "--dtype", dtype)
        assert code == 0, err
    expected = loaded(reference_artifacts, "onnx").run(digits[0])
    for name, array in expected.items():
        stored = read_maps(half, name, dtype=None)
        assert stored.dtype == np.float16
        np.testing.assert_array_equal(stored, array.astype(np.float16))  # rounded once, nothing else lost
        back = read_maps(half, name)
        assert back.dtype == np.float32 and np.allclose(back, array, rtol=2.0 ** -11, atol=2.0 ** -24)
        np.testing.assert_array_equal(read_maps(full, name, slice(3, 5)), array[3:5])
    if suffix == ".zarr":
        assert zarr.open_group(str(half), mode="r").attrs["dtype"] == "float16"
        assert zarr.open_group(str(full), mode="r").attrs["dtype"] == "float32"
        size = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in (half, full)]
        assert size[0] < 0.75 * size[1]
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", half, "--dtype", "int8")
    assert code == 2 and "invalid choice" in err
    with pytest.raises(DataError, match="cannot read output 'nope'"):
        read_maps(half, "nope")


def test_image_folders_record_each_rows_file_in_npz_and_zarr(capsys, tmp_path, digits, loaded, reference_artifacts):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(digits[0][:5]):
        Image.fromarray(image).save(folder / f"digit_{i}.png")
    (folder / "notes.txt").write_text("not an image: skipped")
    expected = loaded(reference_artifacts, "onnx").run(digits[0][:5])
    files = [str(folder / f"digit_{i}.png") for i in range(5)]

    code, _, err = cli(capsys, "run", reference_artifacts, "--input", folder, "--out", tmp_path / "a.npz",
                       "--batch-size", 2)
    assert code == 0, err
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        assert f["sources"].tolist() == files
        np.testing.assert_array_equal(f["conv2d"], expected["conv2d"])
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", folder, "--out", tmp_path / "a.zarr",
                       "--batch-size", 2)
    assert code == 0, err
    assert zarr.open_group(str(tmp_path / "a.zarr"), mode="r").attrs["sources"] == files


def test_zarr_array_and_group_inputs(capsys, tmp_path, digits, loaded, reference_artifacts):
    x = digits[0][:10]
    zarr.create_array(str(tmp_path / "in.zarr"), data=x, chunks=(4, 28, 28))
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    group.create_array("images", data=x[::-1], chunks=(3, 28, 28))
    group.create_array("labels", data=digits[1][:10])
    expected = loaded(reference_artifacts, "onnx").run(x, ["conv2d_1"])["conv2d_1"]
    for source, extra, rows in (("in.zarr", [], slice(None)),
                                ("group.zarr", ["--key", "images"], slice(None, None, -1))):
        code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / source, *extra,
                           "--out", tmp_path / "out.npz", "--outputs", "conv2d_1", "--batch-size", 4)
        assert code == 0, err
        with np.load(tmp_path / "out.npz") as f:
            np.testing.assert_array_equal(f["conv2d_1"], expected[rows])
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "group.zarr",
                       "--out", tmp_path / "b.npz")
    assert code == 2 and "holds arrays ['images', 'labels'] and none is named 'x_test'; choose one with --key" in err


def test_an_existing_store_is_replaced_only_on_success(capsys, tmp_path, digits_npy, reference_artifacts):
    out = tmp_path / "acts.zarr"
    np.save(tmp_path / "wrong.npy", np.zeros((3, 27, 28), np.uint8))
    assert cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", out, "--outputs", "dense_1")[0] == 0
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    # The first input streams through several batches before the second one's shape is found wrong.
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npy, tmp_path / "wrong.npy",
                       "--out", out, "--batch-size", 8)
    assert code == 2 and "got shape [3, 27, 28]" in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before and hidden(tmp_path) == []
    assert cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", out)[0] == 0
    assert sorted(zarr.open_group(str(out), mode="r").array_keys()) == ["conv2d", "conv2d_1", "dense_1"]
    assert hidden(tmp_path) == []


def test_out_that_is_not_a_store_is_never_replaced(capsys, tmp_path, digits_npy, reference_artifacts):
    keep = tmp_path / "results.zarr"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", keep)
    assert code == 2 and "exists and is not a Zarr store; refusing to replace it" in err
    assert (keep / "precious.txt").read_text() == "mine"
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npy, "--out", tmp_path / "a.zarr",
                       "--compress")
    assert code == 2 and "--compress applies to .npz output" in err


@pytest.mark.parametrize("rows, batch", [(100, 32), (64, 24), (5, 256), (300, 100)])
def test_whole_shards_are_written_byte_for_byte_as_zarr_writes_them(tmp_path, rows, batch):
    """runtime/shards.py bypasses zarr's write path: the files must be the ones zarr would write."""
    rng = np.random.default_rng(rows)
    arrays = {"maps": np.maximum(rng.standard_normal((rows, 7, 5, 3)), 0).astype(np.float32),
              "probs": rng.standard_normal((rows, 10)).astype(np.float32)}
    stores = {}
    for how in ("direct", "zarr"):
        stores[how] = out = tmp_path / f"{how}.zarr"
        with ZarrWriter(out, rows, chunk_rows(batch), {}, shard_rows=batch) as w:
            w.append({n: a[:0] for n, a in arrays.items()})
            if how == "zarr":
                w.shards.clear()  # every write through zarr's own array[a:b] = x
            else:
                assert w.shards
            for i in range(0, rows, batch):
                w.append({n: a[i:i + batch] for n, a in arrays.items()})
            w.commit()
    files = {how: {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
             for how, out in stores.items()}
    assert files["direct"].keys() == files["zarr"].keys()
    assert [f for f in files["direct"] if files["direct"][f] != files["zarr"][f]] == []
    store = zarr.open_group(str(stores["direct"]), mode="r")
    for name, array in arrays.items():
        np.testing.assert_array_equal(store[name][:], array)


@pytest.mark.parametrize("writer", ["npz", "zarr"])
def test_writers_confine_output_names(tmp_path, writer):
    target = tmp_path / "out" / f"a.{writer}"
    target.parent.mkdir()
    make = (lambda: NpzWriter(target, 1)) if writer == "npz" else (lambda: ZarrWriter(target, 1, 1, {}))
    for name in ("../escape", "/abs", "a/b", ".hidden", ""):
        with pytest.raises(ArtifactError, match="is not allowed"), make() as w:
            w.append({name: np.ones((1, 2), np.float32)})
    assert sorted(os.listdir(tmp_path)) == ["out"] and os.listdir(tmp_path / "out") == []


def test_an_interrupt_while_the_store_is_created_leaves_nothing(tmp_path, monkeypatch):
    real = zarr.open_group

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)  # the temporary store holds zarr.json now
        raise KeyboardInterrupt

    monkeypatch.setattr(zarr, "open_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ZarrWriter(tmp_path / "a.zarr", 1, 1, {})
    assert os.listdir(tmp_path) == []


def test_zarr_writer_reports_unwritable_folders(tmp_path):
    with pytest.raises(DataError, match="cannot write"):
        ZarrWriter(tmp_path / "missing" / "a.zarr", 1, 1, {})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_leaves_the_previous_store(sig, tmp_path, mnist_npz, reference_artifacts, signalled_run):
    out = tmp_path / "acts.zarr"
    group = zarr.open_group(str(out), mode="w")
    group.attrs["complete"] = True
    group.create_array("previous", data=np.arange(3))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    code, err = signalled_run([reference_artifacts, "--input", mnist_npz, "--out", out, "--batch-size", 32],
                              ready=lambda: list(tmp_path.glob(".acts.zarr.tmp-*/conv2d")), sig=sig, env=env)
    assert code == (130 if sig == signal.SIGINT else 143), err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert hidden(tmp_path) == []
    assert sorted(zarr.open_group(str(out), mode="r").array_keys()) == ["previous"]


def test_local_run_never_imports_ray(tmp_path, reference_artifacts):
    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), np.uint8))
    code = f"""
import json, sys
from runtime.cli.main import main
from runtime.cli.process import run_cli
code = run_cli(main, ["run", {str(reference_artifacts)!r}, "--input", {str(tmp_path / 'x.npy')!r},
                      "--out", {str(tmp_path / 'a.zarr')!r}])
code += run_cli(main, ["stats", {str(reference_artifacts)!r}, "--input", {str(tmp_path / 'x.npy')!r},
                       "--out", {str(tmp_path / 'stats')!r}])
print(json.dumps({{"code": code, "ray": [m for m in sys.modules if m == "ray" or m.startswith("ray.")]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "ray": []}, proc.stderr
