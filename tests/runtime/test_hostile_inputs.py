"""Hostile files and races: a full disk, decoding bombs, lying stores and stats folders, symbolic links, terminal
escapes. Every case ends in one line (or a correct result), with nothing left behind."""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from mutations import Mutations
from PIL import Image

from runtime.artifacts.budgets import Budgets
from runtime.artifacts.stats_folder import read_stats, read_topk
from runtime.cli.main import main
from runtime.cli.process import printable, run_cli
from runtime.errors import ArtifactError, DataError, FeatureMapsError
from runtime.jobs import zarr_input
from runtime.jobs.sources import open_source
from runtime.serve.triton import TritonOptions, write_repository
from viz import gallery

zarr = pytest.importorskip("zarr")


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *parts: str) -> None:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


# --- a full disk: a real tmpfs of a few kB ---------------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A folder on a tmpfs of 64 kB (mounting needs root; skipped, saying so, where it is not permitted)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("kind", ["npz", "zarr", "stats", "gallery", "triton", "viz", "export"])
def test_a_full_disk_is_one_line_and_leaves_nothing(kind, capsys, full_disk, reference_artifacts, reference_stats,
                                                    reference_model_path, digits, tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", digits[0][:64])
    argv = {"npz": ["run", reference_artifacts, "--input", tmp_path / "x.npy", "--out", full_disk / "a.npz"],
            "zarr": ["run", reference_artifacts, "--input", tmp_path / "x.npy", "--out", full_disk / "a.zarr"],
            "stats": ["stats", reference_artifacts, "--input", tmp_path / "x.npy", "--out", full_disk / "st"],
            "triton": ["triton", reference_artifacts, "--out", full_disk / "repo"]}
    if kind in ("gallery", "viz"):
        from viz.cli import main as viz_main

        argv = (["gallery", str(reference_stats), "--out", str(full_disk / "site")] if kind == "gallery"
                else [str(reference_artifacts), "--index", "0", "--out", str(full_disk / "fig")])
        code = run_cli(viz_main, argv)
        err = capsys.readouterr().err
    elif kind == "export":
        from export.cli import main as export_main

        monkeypatch.delenv("MNIST_NPZ", raising=False)  # verify on the shipped digits: this is about the disk
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
        code = run_cli(export_main, ["--model", str(reference_model_path), "--out", str(full_disk / "art")])
        err = capsys.readouterr().err
        err = "".join(line + "\n" for line in err.splitlines() if line.startswith("error: "))  # progress lines aside
    else:
        code, _, err = cli(capsys, *argv[kind], *(["--quiet"] if kind != "triton" else []))
    one_line(code, err, "No space left on device")
    assert os.listdir(full_disk) == []  # no temporary file or folder left


# --- decoding budgets, checked before any byte is read ---------------------------------------------

def test_an_image_over_max_pixels_is_refused_from_its_header(tmp_path, reference_artifacts, capsys):
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(tmp_path / "big.png")
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "big.png", "--out",
                       tmp_path / "a.npz", "--max-pixels", "100000")
    one_line(code, err, "(400x300) declares 120,000 pixels, over the budget --max-pixels of 100,000")
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "big.png", "--out",
                       tmp_path / "a.npz", "--quiet")
    assert code == 0 and (tmp_path / "a.npz").exists()


def test_zarr_declarations_are_checked_before_reading(tmp_path, reference_artifacts, capsys):
    zarr.create_array(tmp_path / "shape.zarr", shape=(2, 32768, 32768), chunks=(1, 1024, 1024), dtype="uint8")
    zarr.create_array(tmp_path / "chunk.zarr", shape=(650_000, 28, 28), chunks=(650_000, 28, 28), dtype="uint8")
    zarr.create_array(tmp_path / "rows.zarr", shape=(10**12, 28, 28), chunks=(256, 28, 28), dtype="uint8")
    for name, message in (("shape", "got shape [2, 32768, 32768]"),
                          ("chunk", "declares 509,600,000 bytes per chunk, over the budget --max-chunk-bytes"),
                          ("rows", "declares 1,000,000,000,000 rows, over the budget --max-rows")):
        code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / f"{name}.zarr", "--out",
                           tmp_path / "a.npz")
        one_line(code, err, message)
    assert sorted(os.listdir(tmp_path)) == ["chunk.zarr", "rows.zarr", "shape.zarr"]


def test_an_npz_member_over_max_member_bytes_is_refused_before_inflating(tmp_path, digits, reference_artifacts):
    np.savez_compressed(tmp_path / "x.npz", x_test=np.zeros((2000, 28, 28), np.uint8))  # 1.5 MB deflates to 2 kB
    spec = __import__("runtime").load(reference_artifacts).input_spec
    with pytest.raises(DataError, match="declares 1,568,128 bytes, over the budget `max_member_bytes`"):
        open_source(tmp_path / "x.npz", spec, 256, budgets=Budgets(max_member_bytes=1_000_000))
    assert open_source(tmp_path / "x.npz", spec, 256).count == 2000


def test_absent_chunks_are_an_error_unless_the_fill_value_is_accepted(tmp_path, reference_artifacts, capsys):
    z = zarr.create_array(tmp_path / "gap.zarr", shape=(768, 28, 28), chunks=(256, 28, 28), dtype="uint8")
    z[:256] = 7
    z[512:] = 7
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "gap.zarr", "--out",
                       tmp_path / "a.npz", "--quiet")
    one_line(code, err, "lacks chunk 'c/1/0/0'", "--fill-absent")
    assert not (tmp_path / "a.npz").exists()
    code, _, _ = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "gap.zarr", "--out",
                     tmp_path / "a.npz", "--quiet", "--fill-absent")
    assert code == 0
    with np.load(tmp_path / "a.npz") as f:
        assert f["dense_1"].shape == (768, 10)


@pytest.mark.parametrize("compressor", ["zstd", "blosc"])
def test_a_chunk_whose_frame_declares_too_much_is_refused_before_decoding(compressor, tmp_path, reference_artifacts,
                                                                          capsys):
    from numcodecs import Blosc, Zstd
    from zarr.codecs import BloscCodec, ZstdCodec

    codec = {"zstd": (ZstdCodec(), Zstd()), "blosc": (BloscCodec(cname="lz4"), Blosc("lz4"))}[compressor]
    spec = __import__("runtime").load(reference_artifacts).input_spec
    sharded = zarr.create_array(tmp_path / "sharded.zarr", shape=(512, 28, 28), chunks=(64, 28, 28),
                                shards=(256, 28, 28), dtype="uint8", compressors=codec[0])
    sharded[:] = 1  # honest shards pass: their index locates frames that declare one chunk each
    assert sum(len(part) for part in open_source(tmp_path / "sharded.zarr", spec, 100).items()) == 512
    store = tmp_path / "bomb.zarr"
    z = zarr.create_array(store, shape=(512, 28, 28), chunks=(256, 28, 28), dtype="uint8", compressors=codec[0])
    z[:] = 1
    (store / "c" / "0" / "0" / "0").write_bytes(codec[1].encode(np.zeros(20_000_000, np.uint8)))  # kB -> 20 MB
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", store, "--out", tmp_path / "a.npz")
    one_line(code, err, f"holds a {compressor} frame that declares 20,000,000 decoded bytes; one chunk is 200,704")


def _store_of(codec: str, path: Path, chunks: int = 256):
    """A (512, 28, 28) uint8 store compressed with codec (Zarr v3 for gzip, zlib, lzma; v2 for bz2, lz4), its first
    chunk's file, and that codec as numcodecs writes it."""
    import numcodecs
    from zarr.codecs import GzipCodec
    from zarr.codecs import numcodecs as v3

    raw = {"gzip": numcodecs.GZip(), "zlib": numcodecs.Zlib(), "bz2": numcodecs.BZ2(), "lzma": numcodecs.LZMA(),
           "lz4": numcodecs.LZ4()}[codec]
    compressor, fmt = {"gzip": (GzipCodec(), 3), "zlib": (v3.Zlib(), 3), "lzma": (v3.LZMA(), 3), "bz2": (raw, 2),
                       "lz4": (raw, 2)}[codec]
    z = zarr.create_array(path, shape=(512, 28, 28), chunks=(chunks, 28, 28), dtype="uint8", compressors=compressor,
                          zarr_format=fmt)
    z[:] = (np.arange(512 * 28 * 28) % 251).astype(np.uint8).reshape(512, 28, 28)
    return z, path / ("c/0/0/0" if fmt == 3 else "0.0.0"), raw


@pytest.mark.filterwarnings("ignore::UserWarning")  # zarr: numcodecs codecs are outside the v3 specification
@pytest.mark.parametrize("codec", ["gzip", "zlib", "bz2", "lzma", "lz4"])
def test_a_chunk_that_inflates_past_one_chunk_is_stopped_with_bounded_memory(codec, tmp_path, reference_artifacts,
                                                                             capsys):
    import tracemalloc

    spec = __import__("runtime").load(reference_artifacts).input_spec
    z, chunk, raw = _store_of(codec, tmp_path / "good.zarr")
    np.testing.assert_array_equal(np.concatenate(list(open_source(tmp_path / "good.zarr", spec, 100).items())), z[:])
    _, chunk, raw = _store_of(codec, tmp_path / "bomb.zarr")
    chunk.write_bytes(raw.encode(np.zeros(32 << 20, np.uint8)))  # 32 MB of zeros: 0.5 kB (bz2) to 150 kB (lz4)
    assert chunk.stat().st_size < 200_704  # small enough for the stored-size check: only decoding tells
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "bomb.zarr", "--out",
                       tmp_path / "a.npz")
    told = "declares 33,554,432 decoded bytes" if codec == "lz4" else "decodes past 200,704 bytes"
    one_line(code, err, f"holds a {codec} frame that {told}; one chunk is 200,704", "--max-chunk-bytes")
    assert not (tmp_path / "a.npz").exists()
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="one chunk is 200,704"):
            list(open_source(tmp_path / "bomb.zarr", spec, 256).items())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A piece (1 MB) and the stored bytes, never the 32 MB the chunk inflates to; lzma's decoder also allocates the
    # 8 MB window its header asks for (preset 6; the pages are touched only as far as it decodes).
    assert peak < (4 << 20) + (8 << 20 if codec == "lzma" else 0), peak


@pytest.mark.parametrize("location", ["start", "end"])
def test_each_frame_of_a_shard_is_capped(location, tmp_path, reference_artifacts):
    import gzip

    from zarr.codecs import BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec

    spec = __import__("runtime").load(reference_artifacts).input_spec
    sharding = ShardingCodec(chunk_shape=(64, 28, 28), codecs=[BytesCodec(), GzipCodec(), Crc32cCodec()],
                             index_location=location)
    z = zarr.create_array(tmp_path / "s.zarr", shape=(512, 28, 28), chunks=(256, 28, 28), dtype="uint8",
                          serializer=sharding, compressors=None)
    z[:] = (np.arange(512 * 28 * 28) % 251).astype(np.uint8).reshape(512, 28, 28)
    np.testing.assert_array_equal(np.concatenate(list(open_source(tmp_path / "s.zarr", spec, 100).items())), z[:])
    bomb = gzip.compress(bytes(8 << 20))  # 8 kB that inflate to 8 MB, as the first of the shard's four frames
    index = np.full((4, 2), 2**64 - 1, "<u8")
    index[0] = (68 if location == "start" else 0, len(bomb))
    tail = index.tobytes() + bytes(4)
    (tmp_path / "s.zarr" / "c" / "0" / "0" / "0").write_bytes(tail + bomb if location == "start" else bomb + tail)
    with pytest.raises(DataError, match="holds a gzip frame that decodes past 50,176 bytes; one chunk is 50,176"):
        list(open_source(tmp_path / "s.zarr", spec, 256).items())


def test_concatenated_streams_are_counted_to_the_end():
    import bz2
    import gzip
    import lzma
    import zlib

    bomb = np.zeros(8 << 20, np.uint8).tobytes()
    # numcodecs' GZip reads every member (skipping zero padding) and BZ2 every stream: a small honest one first
    # hides nothing.
    for kind, stream in (("gzip", gzip.compress(b"x") + b"\0" * 7 + gzip.compress(bomb)),
                         ("bz2", bz2.compress(b"x") + bz2.compress(bomb))):
        assert zarr_input.decodes_within(stream, kind, 200_704) > 200_704
    assert zarr_input.decodes_within(zlib.compress(b"x" * 1000) + b"trailing", "zlib", 200_704) == 1000
    assert zarr_input.decodes_within(b"not gzip", "gzip", 10) is None  # uncheckable: refused
    raw = lzma.compress(bomb, lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])  # numcodecs can be told to
    assert zarr_input.decodes_within(raw, "lzma", 200_704) is None


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_codec_that_can_be_neither_checked_nor_capped_is_refused(tmp_path, reference_artifacts, capsys):
    import lzma

    import numcodecs
    from zarr.codecs import numcodecs as v3

    z = zarr.create_array(tmp_path / "delta.zarr", shape=(512, 28, 28), chunks=(256, 28, 28), dtype="uint8",
                          filters=[numcodecs.Delta("u1")], compressors=numcodecs.Zlib(), zarr_format=2)
    z[:] = 1
    y = zarr.create_array(tmp_path / "shuffle.zarr", shape=(512, 28, 28), chunks=(256, 28, 28), dtype="uint8",
                          compressors=[v3.Shuffle(), v3.Zlib()])
    y[:] = 1
    for name, codec in (("delta", "'delta'"), ("shuffle", "'numcodecs.shuffle'")):
        code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / f"{name}.zarr", "--out",
                           tmp_path / "a.npz")
        one_line(code, err, f"uses codec {codec}, whose decoded size can be neither checked nor capped",
                 "supported: blosc, zstd, lz4, gzip, zlib, bz2, lzma")
    raw = zarr.create_array(tmp_path / "raw.zarr", shape=(512, 28, 28), chunks=(256, 28, 28), dtype="uint8",
                            compressors=v3.LZMA(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]))
    raw[:] = 1  # raw lzma streams have no header to count from: refused at the first chunk
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "raw.zarr", "--out",
                       tmp_path / "a.npz")
    one_line(code, err, "chunk 'c/0/0/0' holds a lzma frame that does not decode as a lzma stream")


def test_each_chunk_is_decoded_once(tmp_path, reference_artifacts, monkeypatch):
    z = zarr.create_array(tmp_path / "big_chunks.zarr", shape=(1000, 28, 28), chunks=(400, 28, 28), dtype="uint8")
    z[:] = np.arange(1000, dtype=np.uint8)[:, None, None]
    store = zarr_input._store_class()
    reads: list[str] = []
    real = store._read
    monkeypatch.setattr(store, "_read", lambda self, key, byte_range: reads.append(key) or real(self, key, byte_range))
    spec = __import__("runtime").load(reference_artifacts).input_spec
    source = open_source(tmp_path / "big_chunks.zarr", spec, batch_size=64)
    rows = np.concatenate(list(source.items()))
    np.testing.assert_array_equal(rows[:, 0, 0], np.arange(1000, dtype=np.uint8))
    chunks = [k for k in reads if k.startswith("c/")]
    assert sorted(chunks) == ["c/0/0/0", "c/1/0/0", "c/2/0/0"], reads  # each once, though batches are 64 rows


# --- symbolic links inside stores, stats folders and artifacts ----------------------------------------

def test_symbolic_links_inside_are_refused(tmp_path, reference_artifacts, reference_stats, capsys):
    z = zarr.create_array(tmp_path / "s.zarr", shape=(512, 28, 28), chunks=(256, 28, 28), dtype="uint8")
    z[:] = 1
    (tmp_path / "outside.bin").write_bytes((tmp_path / "s.zarr" / "c" / "1" / "0" / "0").read_bytes())
    (tmp_path / "s.zarr" / "c" / "1" / "0" / "0").unlink()
    (tmp_path / "s.zarr" / "c" / "1" / "0" / "0").symlink_to(tmp_path / "outside.bin")
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "s.zarr", "--out",
                       tmp_path / "a.npz", "--quiet")
    one_line(code, err, "symbolic link")

    stats = Path(shutil.copytree(reference_stats, tmp_path / "stats"))
    os.rename(stats / "topk" / "conv2d.npz", tmp_path / "conv2d.npz")
    (stats / "topk" / "conv2d.npz").symlink_to(tmp_path / "conv2d.npz")  # the same bytes, through a link
    with pytest.raises(ArtifactError, match="symbolic link"):
        gallery.write_gallery(stats, tmp_path / "site")

    art = Path(shutil.copytree(reference_artifacts, tmp_path / "art"))
    os.rename(art / "model.onnx", art / "real.onnx")
    (art / "model.onnx").symlink_to("real.onnx")  # inside the folder, right bytes: still refused
    with pytest.raises(ArtifactError, match="symbolic link"):
        write_repository(art, tmp_path / "repo", TritonOptions())
    assert not (tmp_path / "repo").exists() and not (tmp_path / "site").exists()


# --- file names round-trip; terminal output escaped ------------------------------------------------------

def test_any_file_name_round_trips_and_is_escaped_on_the_terminal(tmp_path, reference_artifacts, capsys):
    folder = tmp_path / "pngs"
    folder.mkdir()
    names = ["a\rb.png", "c\vd.png", "e\u2028f.png", "g\x1b]0;owned\x07.png", "plain.png"]
    for i, name in enumerate(names):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(folder / name)
    code, out, _ = cli(capsys, "stats", reference_artifacts, "--input", folder, "--out", tmp_path / "st", "--k", "2",
                       "--quiet")
    assert code == 0 and "\x1b" not in out
    assert read_stats(tmp_path / "st")["source_names"] == [str(folder / n) for n in sorted(names)]
    # the older sources.txt is still read
    old = json.loads((tmp_path / "st" / "stats.json").read_text())
    old["sources"] = "sources.txt"
    (tmp_path / "st" / "stats.json").write_text(json.dumps(old))
    (tmp_path / "st" / "sources.txt").write_text("".join(f"x{i}\n" for i in range(5)))
    assert read_stats(tmp_path / "st")["source_names"] == [f"x{i}" for i in range(5)]

    art = Path(shutil.copytree(reference_artifacts, tmp_path / "art"))
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["source_model"]["name"] = "\x1b]0;pwned\x07\x1b[2J\rintegrity: all files match"
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = cli(capsys, "info", art, "--backend", "onnx")
    assert "\x1b" not in out + err and "\r" not in out + err and "\\x1b]0;pwned\\x07\\x1b[2J\\r" in out + err
    assert printable("a\x1bb\x9bc\u2028") == "a\\x1bb\\x9bc\\u2028"


# --- fuzz: hundreds of mutated stats folders and Zarr metadata ------------------------------------------

ODD = [None, True, False, 0, -1, 1.5, 10**30, "", "../x", "/etc/passwd", "x" * 2000, "\x00", [], [None], {},
       {"a": {"b": []}}, "ü名", 2**63, "NaN"]


MUTATIONS = Mutations(ODD, delete=0.25, add=0.35, scale=0.55, keys=("surprise", "../k", ""), max_list=80)


def test_fuzzed_stats_folders_end_in_one_line_or_a_correct_read(reference_stats, tmp_path):
    folder = Path(shutil.copytree(reference_stats, tmp_path / "stats"))
    good = json.loads((folder / "stats.json").read_text())
    topk = (folder / "topk" / "conv2d.npz").read_bytes()
    rng = random.Random(22)
    outcomes = {"refused": 0, "read": 0}
    for i in range(300):
        (folder / "stats.json").write_text(json.dumps(MUTATIONS.mutate(good, rng)))
        if i % 3 == 0:  # and a damaged top-k file: flipped bytes or cut short
            data = bytearray(topk)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            (folder / "topk" / "conv2d.npz").write_bytes(bytes(data[:rng.randint(len(data) // 2, len(data))])
                                                          if rng.random() < 0.3 else bytes(data))
        else:
            (folder / "topk" / "conv2d.npz").write_bytes(topk)
        try:
            stats = read_stats(folder)
            for name in stats["outputs"]:
                arrays = read_topk(folder, stats, name)
                assert arrays["maps"].shape[:2] == (stats["outputs"][name]["shape"][2], stats["k"])
            outcomes["read"] += 1
        except FeatureMapsError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, (i, str(exc)[:300])
            outcomes["refused"] += 1
    assert outcomes["refused"] > 150 and outcomes["read"] > 10, outcomes


def test_fuzzed_zarr_metadata_ends_in_one_line_or_a_correct_read(tmp_path, reference_artifacts):
    store = tmp_path / "in.zarr"
    z = zarr.create_array(store, shape=(40, 28, 28), chunks=(16, 28, 28), dtype="uint8")
    z[:] = 5
    good = json.loads((store / "zarr.json").read_text())
    spec = __import__("runtime").load(reference_artifacts).input_spec
    rng = random.Random(23)
    outcomes = {"refused": 0, "read": 0}
    for i in range(300):
        (store / "zarr.json").write_text(json.dumps(MUTATIONS.mutate(good, rng)))
        try:
            source = open_source(store, spec, 16)
            rows = sum(len(part) for part in source.items())
            assert rows == source.count
            outcomes["read"] += 1
        except FeatureMapsError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, (i, str(exc)[:300])
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["read"] > 10, outcomes


def test_a_model_swapped_for_a_link_during_the_triton_copy_never_lands_in_the_repository(tmp_path,
                                                                                        reference_artifacts):
    import threading

    art = Path(shutil.copytree(reference_artifacts, tmp_path / "art"))
    real = (art / "model.onnx").read_bytes()
    os.link(art / "model.onnx", tmp_path / "stash.onnx")
    (tmp_path / "outside.onnx").write_bytes(b"x" * len(real))  # same size: only the bytes differ
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.symlink(tmp_path / "outside.onnx", art / ".link")
            os.replace(art / ".link", art / "model.onnx")
            os.link(tmp_path / "stash.onnx", art / ".real")
            os.replace(art / ".real", art / "model.onnx")

    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = {"written": 0, "refused": 0}
    try:
        for i in range(20):
            try:
                target = write_repository(art, tmp_path / f"repo{i}", TritonOptions())
                assert (target / "1" / "model.onnx").read_bytes() == real
                outcomes["written"] += 1
            except ArtifactError as exc:
                assert "\n" not in str(exc)
                outcomes["refused"] += 1
                assert not (tmp_path / f"repo{i}").exists()
    finally:
        stop.set()
        swapper.join()
    assert outcomes["written"] + outcomes["refused"] == 20, outcomes


def test_a_sources_file_swapped_for_a_link_never_shows_an_outside_line(tmp_path, reference_stats):
    import threading

    stats = Path(shutil.copytree(reference_stats, tmp_path / "stats"))
    doc = json.loads((stats / "stats.json").read_text())
    doc["sources"] = "sources.json"
    (stats / "stats.json").write_text(json.dumps(doc))
    names = [f"digit {i}" for i in range(doc["images"])]
    (stats / "sources.json").write_text(json.dumps(names))
    os.link(stats / "sources.json", tmp_path / "stash.json")
    (tmp_path / "secret.json").write_text(json.dumps(["SECRET"] * doc["images"]))
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.symlink(tmp_path / "secret.json", stats / ".link")
            os.replace(stats / ".link", stats / "sources.json")
            os.link(tmp_path / "stash.json", stats / ".real")
            os.replace(stats / ".real", stats / "sources.json")

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for _ in range(40):
            try:
                assert read_stats(stats)["source_names"] == names
            except ArtifactError as exc:
                assert "symbolic link" in str(exc)
    finally:
        stop.set()
        swapper.join()


def test_npz_declarations_and_total_rows_are_checked_before_reading(tmp_path, reference_artifacts, capsys):
    np.savez_compressed(tmp_path / "wide.npz", x_test=np.zeros((2, 2000, 2000), np.uint8))  # 8 MB in a few kB
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "wide.npz", "--out",
                       tmp_path / "a.npz")
    one_line(code, err, "got shape [2, 2000, 2000]")
    np.save(tmp_path / "x.npy", np.zeros((300, 28, 28), np.uint8))
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "x.npy", tmp_path / "x.npy",
                       "--out", tmp_path / "a.npz", "--max-rows", "500")
    one_line(code, err, "the input list (2 inputs) declares 600 rows, over the budget --max-rows of 500 rows")
