"""Per-channel statistics and top-k: equal to brute-force numpy over full arrays, mergeable, written per contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import runtime
from runtime.cli.main import main
from runtime.cli.process import run_cli
from runtime.errors import InputError
from runtime.jobs.stats import Histogram, Stats

K, THRESHOLD = 5, 0.25


@pytest.fixture(scope="session")
def subset(mnist_test):
    """200 real test digits and 8 blank images: ties (all-zero maps) and near-dead channels get exercised."""
    x = np.concatenate([mnist_test[0][:200], np.zeros((8, 28, 28), np.uint8)])
    return x


@pytest.fixture(scope="session")
def maps(subset, loaded, reference_artifacts):
    return loaded(reference_artifacts, "onnx").run(subset, ["conv2d", "conv2d_1"])


def brute_force(a: np.ndarray, images: np.ndarray, edges: np.ndarray) -> dict:
    """Every statistic of one [N, H, W, C] output from the whole array at once."""
    n, c = len(a), a.shape[-1]
    flat = a.reshape(-1, c).astype(np.float64)
    spatial_max = a.reshape(n, -1, c).max(axis=1)
    active = (spatial_max > THRESHOLD).sum(axis=0)
    order = np.stack([np.lexsort((np.arange(n), -spatial_max[:, ch]))[:K] for ch in range(c)])  # ties: lower row
    return {
        "mean": flat.mean(0), "std": flat.std(0), "max": a.reshape(-1, c).max(0), "min": a.reshape(-1, c).min(0),
        "zero_fraction": (flat == 0).mean(0), "dead": active == 0, "nearly_dead": active < 0.01 * n,
        "counts": np.stack([np.histogram(a[..., ch], bins=edges)[0] for ch in range(c)]),
        "index": order, "value": np.take_along_axis(spatial_max.T, order, 1),
        "maps": np.stack([a[order[ch], :, :, ch] for ch in range(c)]),
        "images": images[order][..., None],
    }


def assert_channels_equal(name: str, out: dict, a: np.ndarray, images: np.ndarray) -> dict:
    """One output's per-channel statistics in stats.json equal brute force; returns brute force's numbers."""
    expected = brute_force(a, images, np.asarray(out["histogram"]["edges"]))
    channels = {key: np.array([ch[key] for ch in out["channels"]]) for key in out["channels"][0]}
    np.testing.assert_allclose(channels["mean"], expected["mean"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(channels["std"], expected["std"], rtol=1e-6, atol=1e-9)
    for key in ("max", "min", "zero_fraction", "dead", "nearly_dead"):
        np.testing.assert_array_equal(channels[key], expected[key], err_msg=f"{name} {key}")
    np.testing.assert_array_equal(out["histogram"]["counts"], expected["counts"])
    return expected


def assert_equal_to_brute_force(result: Stats, maps: dict, images: np.ndarray) -> None:
    doc = result.to_json()
    assert doc["images"] == len(images)
    for name, a in maps.items():
        out, s = doc["outputs"][name], result.outputs[name]
        expected = assert_channels_equal(name, out, a, images)
        assert np.sum(out["histogram"]["counts"], axis=1).tolist() == [a[..., 0].size] * a.shape[-1]
        for key in ("index", "value", "maps", "images"):
            np.testing.assert_array_equal(getattr(s, f"top_{key}"), expected[key], err_msg=f"{name} top {key}")


def test_one_pass_equals_brute_force_numpy(subset, maps, loaded, reference_artifacts):
    model = loaded(reference_artifacts, "onnx")
    result = runtime.stats(model, subset, k=K, threshold=THRESHOLD, batch_size=48)
    assert list(result.outputs) == ["conv2d", "conv2d_1"]  # the feature maps, not the probabilities
    assert_equal_to_brute_force(result, maps, subset)
    doc = result.to_json()
    assert doc["outputs"]["conv2d"]["histogram"]["edges"][0] == 0.0  # ReLU maps: an unsigned range


def test_stats_cli_equals_brute_force_numpy(capsys, tmp_path, subset, maps, reference_artifacts):
    """The CLI updates one partial per worker thread, in any order, and merges them: still one pass's numbers."""
    np.save(tmp_path / "x.npy", subset)
    code = run_cli(main, ["stats", str(reference_artifacts), "--input", str(tmp_path / "x.npy"), "--out",
                          str(tmp_path / "stats"), "--k", str(K), "--threshold", str(THRESHOLD), "--batch-size", "16"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert doc["images"] == len(subset)
    for name, a in maps.items():
        out = doc["outputs"][name]
        expected = assert_channels_equal(name, out, a, subset)
        with np.load(tmp_path / "stats" / "topk" / f"{name}.npz") as top:
            for key in ("index", "value", "maps", "images"):
                np.testing.assert_array_equal(top[key], expected[key], err_msg=f"{name} top {key}")


def test_merged_partials_equal_one_pass(subset, maps, loaded, reference_artifacts):
    model = loaded(reference_artifacts, "onnx")
    parts = []
    for start, stop in ((150, 208), (0, 70), (70, 150)):  # map/reduce: any split, merged in any order
        part = Stats(model.manifest, k=K, threshold=THRESHOLD)
        for i in range(start, stop, 32):
            j = min(i + 32, stop)
            part.update(i, subset[i:j], {n: a[i:j] for n, a in maps.items()}, [f"row{r}" for r in range(i, j)])
        parts.append(part)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert_equal_to_brute_force(merged, maps, subset)
    assert [merged.sources[i] for i in range(208)] == [f"row{i}" for i in range(208)]
    api = runtime.stats(model, subset[:100], k=K, threshold=THRESHOLD).merge(
        runtime.stats(model, subset[100:], k=K, threshold=THRESHOLD, start=100))  # the README's example
    assert_equal_to_brute_force(api, maps, subset)
    with pytest.raises(InputError, match="overlapping rows 0..207 and 60..79"):
        merged.merge(Stats(model.manifest, k=K, threshold=THRESHOLD).update(60, subset[60:80],
                                                                         {n: a[60:80] for n, a in maps.items()}))


def test_histogram_of_signed_data_growing_in_scale():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(0, scale, (500, 3)).astype(np.float32) for scale in (0.001, 0.5, 3.0, 40.0)]
    chunks[0] = np.abs(chunks[0])  # starts unsigned, then turns signed and doubles several times
    one = Histogram(3, 16)
    def add(h: Histogram, chunk: np.ndarray) -> None:
        h.add(chunk, float(chunk.min()), float(chunk.max()))

    for chunk in chunks:
        add(one, chunk)
    left, right = Histogram(3, 16), Histogram(3, 16)
    add(left, chunks[3])
    add(right, chunks[0])
    add(right, chunks[1])
    add(left, chunks[2])
    left.merge(right)
    data = np.concatenate(chunks)
    assert one.edges[0] == -one.edges[-1] and one.edges[-1] > np.abs(data).max() >= one.edges[-1] / 2
    for h in (one, left):
        np.testing.assert_array_equal(h.edges, one.edges)
        np.testing.assert_array_equal(h.counts, np.stack([np.histogram(data[:, c], one.edges)[0] for c in range(3)]))
    with pytest.raises(InputError, match="power of two"):
        Histogram(3, 10)


def test_stats_cli_writes_the_contract_folder(capsys, tmp_path, digits, reference_artifacts):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(digits[0][:12]):
        Image.fromarray(image).save(folder / f"d{i:02d}.png")
    out = tmp_path / "stats"
    code = run_cli(main, ["stats", str(reference_artifacts), "--input", str(folder), "--out", str(out), "--k", "3",
                          "--bins", "32", "--batch-size", "5"])
    stdout, err = capsys.readouterr()
    assert code == 0 and err == "", err
    assert stdout.startswith(f"wrote {out}: 12 images") and "conv2d_1: " in stdout and "channels dead" in stdout
    doc = json.loads((out / "stats.json").read_text())
    assert doc["schema"] == "featuremaps.stats/1" and doc["model"] == "mnist_cnn" and doc["images"] == 12
    assert (doc["k"], doc["threshold"], doc["input"]) == (3, 0.0, {"shape": [28, 28, 1], "dtype": "uint8"})
    assert list(doc["outputs"]) == ["conv2d", "conv2d_1"] and doc["sources"] == "sources.json"
    conv = doc["outputs"]["conv2d_1"]
    assert conv["layer"] == "conv2d_1" and conv["shape"] == [11, 11, 64] and len(conv["channels"]) == 64
    assert len(conv["histogram"]["edges"]) == 33 and np.shape(conv["histogram"]["counts"]) == (64, 32)
    with np.load(out / conv["topk"], allow_pickle=False) as f:
        assert {k: (f[k].shape, f[k].dtype.name) for k in f.files} == {
            "index": ((64, 3), "int64"), "value": ((64, 3), "float32"), "maps": ((64, 3, 11, 11), "float32"),
            "images": ((64, 3, 28, 28, 1), "uint8")}
        winner = f["index"][0, 0]
    names = json.loads((out / "sources.json").read_text())
    assert names == [str(folder / f"d{i:02d}.png") for i in range(12)] and 0 <= winner < 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pngs", "stats"]  # no temporaries left


def test_stats_cli_errors_are_one_line_and_write_nothing(capsys, tmp_path, digits, reference_artifacts):
    np.save(tmp_path / "x.npy", digits[0][:4])
    keep = tmp_path / "keep"
    keep.mkdir()
    for extra, message in ((["--bins", "10"], "bins must be a power of two"),
                           (["--outputs", "dense_1"], "statistics cover 2-D feature maps"),
                           (["--k", "0"], "k must be a positive integer"),
                           (["--out", str(keep)], "exists and is not a stats folder")):
        argv = ["stats", str(reference_artifacts), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "s")]
        code = run_cli(main, argv + extra)
        _, err = capsys.readouterr()
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep", "x.npy"]
