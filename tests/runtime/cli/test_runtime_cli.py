"""`python -m runtime info|run`: content, inputs (.npz, .npy, image files), atomic output, one-line errors."""
from __future__ import annotations

import errno
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.artifacts.manifest import SCHEMA_VERSION, read_manifest
from runtime.cli.main import main
from runtime.cli.process import run_cli
from runtime.compare import compare_outputs, failures
from runtime.errors import DataError
from runtime.jobs.store import NpzWriter

ROOT = Path(__file__).resolve().parents[3]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run the CLI in-process as `python -m runtime` would: (exit code, stdout, stderr)."""
    code = run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


def assert_close(actual: dict, reference: dict) -> None:
    problems = failures(compare_outputs(actual, reference))
    assert not problems, problems


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- info -----------------------------------------------------------------------------------------

def test_info_describes_the_artifacts_and_backends(capsys, reference_artifacts):
    code, out, err = cli(capsys, "info", reference_artifacts)
    assert code == 0 and err == ""
    saved_model = sum(rel.startswith("saved_model/") for rel in read_manifest(reference_artifacts).files)
    for expected in (f"schema {SCHEMA_VERSION}", "mnist_cnn from mnist_cnn.keras",
                     "integrity     onnx: model.onnx matches its sha256",
                     f"              tf: saved_model/ ({saved_model} files) match their sha256",
                     "              other: preview_conv2d.png matches its sha256",
                     "image: float32 [N, 28, 28, 1] NHWC; raw uint8 pixels * 0.00392157 + 0 -> [0, 1]",
                     "labels        0, 1, 2, 3, 4, 5, 6, 7, 8, 9", "verification  passed on ", "against keras",
                     "max abs error savedmodel"):
        assert expected in out, expected
    lines = out.splitlines()
    conv = next(line for line in lines if line.split()[0] == "conv2d")
    assert conv.split()[:7] == ["conv2d", "Conv2D", "[N,", "26,", "26,", "32]", "NHWC"] and "feature_map" in conv
    dense = next(line for line in lines if line.split()[0] == "dense_1")
    assert "[N, 10]" in dense and "NC" in dense and "model_output" in dense and "max abs err" in dense
    backends = lines[lines.index("backends") + 1:]
    assert [b.split()[0] for b in backends] == ["onnx", "tf"]
    assert all(re.search(r"  devices cpu(, gpu)?$", b) for b in backends), backends


def test_info_probes_only_the_backend_asked_for(capsys, reference_artifacts):
    code, out, _ = cli(capsys, "info", reference_artifacts, "--backend", "onnx")
    backends = out.splitlines()[out.splitlines().index("backends") + 1:]
    assert code == 0 and len(backends) == 1 and backends[0].split()[:2] == ["onnx", "onnxruntime"]
    assert re.search(r"  devices cpu(, gpu)?$", backends[0]), backends


def test_info_on_tampered_artifacts_is_an_error(capsys, artifacts_copy):
    path = artifacts_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    for backend in ([], ["--backend", "onnx"]):
        code, out, err = cli(capsys, "info", artifacts_copy, *backend)
        assert out == ""
        assert_one_line_error(code, err, "'model.onnx' does not match the manifest's sha256")


@pytest.fixture
def onnx_only(tmp_path, reference_artifacts) -> Path:
    """An ONNX-only deployment: manifest.json and model.onnx alone."""
    folder = tmp_path / "deployed"
    folder.mkdir()
    for name in ("manifest.json", "model.onnx"):
        shutil.copy(reference_artifacts / name, folder / name)
    return folder


def integrity(out: str) -> list[str]:
    """The integrity lines of `info`'s output, without their indent."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("integrity "))
    rest = itertools.takewhile(lambda line: line.startswith("  "), lines[start + 1:])
    return [line.strip() for line in [lines[start][len("integrity"):], *rest]]


def test_info_on_an_onnx_only_deployment(capsys, onnx_only):
    code, out, err = cli(capsys, "info", onnx_only, "--backend", "onnx")
    assert code == 0 and err == "", err
    others = len(read_manifest(onnx_only, verify_files=False).files) - 1
    assert integrity(out) == ["onnx: model.onnx matches its sha256",
                              f"other: {others} files not checked (not loaded by backend 'onnx')"]
    code, out, err = cli(capsys, "info", onnx_only)
    assert code == 0 and err == "", err
    lines = integrity(out)
    assert lines[0] == "onnx: model.onnx matches its sha256"
    assert re.fullmatch(r"tf: saved_model/ \(\d+ files\) absent", lines[1]), lines
    assert lines[2] == "other: preview_conv2d.png absent"
    code, _, err = cli(capsys, "info", onnx_only, "--backend", "tf")
    assert_one_line_error(code, err, "artifact file 'saved_model/")
    assert "listed in the manifest is missing" in err


def test_info_checks_only_the_files_of_the_backend_asked_for(capsys, artifacts_copy):
    victim = next(p for p in sorted((artifacts_copy / "saved_model").rglob("*")) if p.is_file())
    victim.write_bytes(victim.read_bytes() + b"tampered")
    code, out, err = cli(capsys, "info", artifacts_copy, "--backend", "onnx")
    assert code == 0 and err == "" and integrity(out)[0] == "onnx: model.onnx matches its sha256"
    code, out, err = cli(capsys, "info", artifacts_copy)  # a present file that differs is never a deployment choice
    assert out == ""
    rel = victim.relative_to(artifacts_copy).as_posix()
    assert_one_line_error(code, err, f"'{rel}' does not match the manifest's sha256")


def test_info_on_a_folder_no_backend_can_load(capsys, onnx_only):
    (onnx_only / "model.onnx").unlink()
    code, out, err = cli(capsys, "info", onnx_only)
    assert out == ""
    assert_one_line_error(code, err, "no backend can load")
    assert "onnx: model.onnx absent; tf: saved_model/ (" in err


def test_info_on_an_onnx_only_deployment_imports_no_tensorflow(onnx_only):
    code = f"""
import contextlib, io, json, sys
from runtime.cli.main import main
from runtime.cli.process import run_cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = run_cli(main, ["info", {str(onnx_only)!r}, "--backend", "onnx"])
print(json.dumps({{"code": code, "tf": "tensorflow" in sys.modules, "out": out.getvalue()}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (result["code"] == 0 and not result["tf"]
            and "onnx: model.onnx matches its sha256" in result["out"]), proc.stderr


# --- run: inputs ----------------------------------------------------------------------------------

@pytest.fixture
def digits_npz(tmp_path, digits) -> Path:
    path = tmp_path / "digits.npz"
    np.savez(path, x_test=digits[0], y_test=digits[1])
    return path


def read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_run_on_an_npz_equals_model_run(capsys, tmp_path, digits_npz, digits, loaded, reference_artifacts):
    out = tmp_path / "acts.npz"
    code, stdout, err = cli(capsys, "run", reference_artifacts, "--input", digits_npz, "--out", out, "--batch-size", 10)
    assert code == 0 and err == "", err
    assert stdout.startswith(f"wrote {out}: 64 images, dense_1 [64, 10], conv2d [64, 26, 26, 32], "
                             "conv2d_1 [64, 11, 11, 64]")
    acts = read_npz(out)
    assert list(acts) == ["dense_1", "conv2d", "conv2d_1"]
    assert_close(acts, loaded(reference_artifacts, "onnx").run(digits[0]))
    assert leftovers(tmp_path) == []


def test_run_with_the_tf_backend_and_chosen_outputs(capsys, tmp_path, digits_npz, digits, loaded, reference_artifacts):
    out = tmp_path / "acts.npz"
    code, stdout, _ = cli(capsys, "run", reference_artifacts, "--input", digits_npz, "--out", out,
                          "--backend", "tf", "--device", "cpu", "--outputs", "conv2d_1,dense_1")
    assert code == 0 and "(tf on cpu," in stdout
    acts = read_npz(out)
    assert list(acts) == ["conv2d_1", "dense_1"]
    assert_close(acts, loaded(reference_artifacts, "tf").run(digits[0], ["conv2d_1", "dense_1"]))


def test_npz_key_selection(capsys, tmp_path, digits, loaded, reference_artifacts):
    x = digits[0][:5]
    np.savez(tmp_path / "one.npz", images=x)
    np.savez(tmp_path / "two.npz", a=x, b=x[:2])
    expected = loaded(reference_artifacts, "onnx").run(x, ["dense_1"])
    for args in (["one.npz"], ["two.npz", "--key", "a"]):
        code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / args[0], *args[1:],
                           "--out", tmp_path / "acts.npz", "--outputs", "dense_1")
        assert code == 0, err
        assert_close(read_npz(tmp_path / "acts.npz"), expected)
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "two.npz", "--out", tmp_path / "x.npz")
    assert_one_line_error(code, err, "holds arrays ['a', 'b'] and none is named 'x_test'; choose one with --key")
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "two.npz", "--key", "c",
                       "--out", tmp_path / "x.npz")
    assert_one_line_error(code, err, "has no array 'c'; its arrays: ['a', 'b']")


def test_run_on_npy_files_batches_and_single_images(capsys, tmp_path, digits, loaded, reference_artifacts):
    x = digits[0]
    np.save(tmp_path / "batch.npy", x[:20, :, :, None].astype(np.float32) / np.float32(255))  # [N,H,W,C] floats
    np.save(tmp_path / "one.npy", x[20])  # [H,W]: one image
    out = tmp_path / "acts.npz"
    code, stdout, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "batch.npy", tmp_path / "one.npy",
                            "--out", out, "--batch-size", 8)
    assert code == 0, err
    assert "21 images" in stdout
    assert_close(read_npz(out), loaded(reference_artifacts, "onnx").run(x[:21]))


def test_run_on_png_files_and_globs(capsys, tmp_path, digits, loaded, reference_artifacts):
    folder = tmp_path / "pngs"
    folder.mkdir()
    x = digits[0][:5]
    for i, image in enumerate(x):
        Image.fromarray(image).save(folder / f"digit_{i}.png")
    Image.fromarray(255 - x[0]).save(tmp_path / "dark_on_light.png")
    expected = loaded(reference_artifacts, "onnx").run(x)

    code, _, err = cli(capsys, "run", reference_artifacts, "--input", folder / "digit_0.png", folder / "digit_1.png",
                       "--input", folder / "digit_2.png", "--out", tmp_path / "a.npz")
    assert code == 0, err
    acts = read_npz(tmp_path / "a.npz")
    assert acts.pop("sources").tolist() == [str(folder / f"digit_{i}.png") for i in range(3)]  # row -> file
    assert_close(acts, {n: a[:3] for n, a in expected.items()})

    code, stdout, err = cli(capsys, "run", reference_artifacts, "--input", str(folder / "digit_*.png"),
                            "--out", tmp_path / "b.npz", "--batch-size", 2)
    assert code == 0 and "5 images" in stdout, err
    acts = read_npz(tmp_path / "b.npz")
    assert acts.pop("sources").tolist() == [str(folder / f"digit_{i}.png") for i in range(5)]  # sorted glob
    assert_close(acts, expected)

    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "dark_on_light.png", "--invert",
                       "--out", tmp_path / "c.npz")
    assert code == 0, err
    acts = read_npz(tmp_path / "c.npz")
    assert acts.pop("sources").tolist() == [str(tmp_path / "dark_on_light.png")]
    assert_close(acts, {n: a[:1] for n, a in expected.items()})


def test_empty_input_writes_empty_arrays_of_the_right_shapes(capsys, tmp_path, reference_artifacts):
    np.save(tmp_path / "none.npy", np.zeros((0, 28, 28), np.uint8))
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", tmp_path / "none.npy",
                       "--out", tmp_path / "a.npz")
    assert code == 0, err
    assert {k: v.shape for k, v in read_npz(tmp_path / "a.npz").items()} == {
        "dense_1": (0, 10), "conv2d": (0, 26, 26, 32), "conv2d_1": (0, 11, 11, 64)}


def test_compressed_output_holds_the_same_arrays(capsys, tmp_path, digits_npz, reference_artifacts):
    cli(capsys, "run", reference_artifacts, "--input", digits_npz, "--out", tmp_path / "plain.npz")
    code, _, _ = cli(capsys, "run", reference_artifacts, "--input", digits_npz, "--out", tmp_path / "small.npz",
                     "--compress")
    assert code == 0
    assert (tmp_path / "small.npz").stat().st_size < (tmp_path / "plain.npz").stat().st_size / 2
    plain, small = read_npz(tmp_path / "plain.npz"), read_npz(tmp_path / "small.npz")
    for name in plain:
        np.testing.assert_array_equal(plain[name], small[name])


# --- run: errors ----------------------------------------------------------------------------------

def bad_npz(folder: Path) -> Path:
    (folder / "bad.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return folder / "bad.npz"


def pickled_npy(folder: Path) -> Path:
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return folder / "objects.npy"


def wrong_shape_npy(folder: Path) -> Path:
    np.save(folder / "wrong.npy", np.zeros((4, 27, 28), np.uint8))
    return folder / "wrong.npy"


def broken_png(folder: Path) -> Path:
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder / "broken.png"


def nan_npy(folder: Path) -> Path:
    np.save(folder / "nan.npy", np.full((2, 28, 28), np.nan, np.float32))
    return folder / "nan.npy"


# name: (make the input file in a folder -> path, extra arguments, expected part of the message)
RUN_ERRORS = {
    "missing input": (lambda d: d / "missing.npz", [], "input file '"),
    "glob matching nothing": (lambda d: d / "*.nothing", [], "no input file matches"),
    "folder without images": (lambda d: d, [], "holds no image files"),
    "unreadable npz": (bad_npz, [], "cannot read array file"),
    "pickled objects": (pickled_npy, [], "cannot read array file"),
    "wrong shape": (wrong_shape_npy, [], "with H,W = 28,28; got shape [4, 27, 28]"),
    "NaN": (nan_npy, [], "images contain 1568 NaN or infinite values"),
    "broken png": (broken_png, [], "cannot read image"),
    "unknown output": (wrong_shape_npy, ["--outputs", "conv2d,conv9"], "unknown output name(s) ['conv9']"),
    "batch size 0": (wrong_shape_npy, ["--batch-size", "0"], "batch_size must be an integer of at least 1; got 0"),
    "batch size not a number": (wrong_shape_npy, ["--batch-size", "many"], "argument --batch-size: invalid int value"),
    "unknown backend": (wrong_shape_npy, ["--backend", "torch"], "argument --backend: invalid choice: 'torch'"),
    "unknown device": (wrong_shape_npy, ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
}


@pytest.mark.parametrize("case", RUN_ERRORS, ids=str)
def test_run_errors_are_one_line_and_write_nothing(case, capsys, tmp_path, reference_artifacts):
    make, extra, message = RUN_ERRORS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    out = tmp_path / "acts.npz"
    code, stdout, err = cli(capsys, "run", reference_artifacts, "--input", make(inputs), "--out", out, *extra)
    assert_one_line_error(code, err, message)
    assert stdout == "" and not out.exists() and leftovers(tmp_path) == []


def test_gpu_asked_for_but_absent(capsys, tmp_path, digits_npz, reference_artifacts):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime has CUDA here: no error to observe")
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npz, "--out", tmp_path / "a.npz",
                       "--device", "gpu")
    assert_one_line_error(code, err, "device 'gpu' asked for backend 'onnx', but it has only ['cpu'] here")


def test_bad_out_and_artifacts(capsys, tmp_path, digits_npz, artifacts_copy):
    code, _, err = cli(capsys, "run", artifacts_copy, "--input", digits_npz, "--out", tmp_path)
    assert_one_line_error(code, err, "is a folder; expected the path of an .npz file")
    code, _, err = cli(capsys, "run", artifacts_copy, "--input", digits_npz, "--out", tmp_path / "no" / "a.npz")
    assert_one_line_error(code, err, "does not exist")
    code, _, err = cli(capsys, "run", tmp_path / "nowhere", "--input", digits_npz, "--out", tmp_path / "a.npz")
    assert_one_line_error(code, err, "does not exist (expected the output of `python -m export`)")
    (artifacts_copy / "model.onnx").write_bytes(b"tampered")
    code, _, err = cli(capsys, "run", artifacts_copy, "--input", digits_npz, "--out", tmp_path / "a.npz")
    assert_one_line_error(code, err, "'model.onnx' does not match the manifest's sha256")
    code, _, err = cli(capsys)
    assert_one_line_error(code, err, "the following arguments are required: {info,run,stats,serve,triton}")


def test_out_must_end_in_npz(capsys, tmp_path, digits_npz, monkeypatch):
    monkeypatch.setattr("runtime.jobs.engine.load", refuse_to_load)
    for name in ("acts", "acts.npy", "acts.npz.tmp"):
        code, stdout, err = cli(capsys, "run", "artifacts", "--input", digits_npz, "--out", tmp_path / name)
        assert_one_line_error(code, err, f"--out '{tmp_path / name}' must end in .npz")
        assert stdout == "" and not (tmp_path / name).exists()


def refuse_to_load(*args, **kwargs):
    raise AssertionError("the model was loaded before --out was checked")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, which refuses new files even to root")
def test_out_in_a_folder_that_refuses_files_is_an_error_before_loading(capsys, digits_npz, monkeypatch):
    monkeypatch.setattr("runtime.jobs.engine.load", refuse_to_load)
    code, stdout, err = cli(capsys, "run", "artifacts", "--input", digits_npz, "--out", "/proc/x.npz")
    assert_one_line_error(code, err, "cannot write '/proc/x.npz': folder '/proc' does not accept new files")
    assert stdout == ""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc, which refuses new files even to root")
def test_npz_writer_reports_write_failures_as_data_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="cannot write '/proc/x.npz'"):
        NpzWriter(Path("/proc/x.npz"), 1)

    def full_disk(path, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    target = tmp_path / "a.npz"
    target.write_bytes(b"previous results")
    monkeypatch.setattr("runtime.jobs.store.atomic_write", full_disk)
    with pytest.raises(DataError, match=f"cannot write '{re.escape(str(target))}': No space left on device"):
        with NpzWriter(target, 2) as writer:
            writer.append({"x": np.ones((2, 3), np.float32)})
            writer.commit()
    assert target.read_bytes() == b"previous results" and leftovers(tmp_path) == []


def test_a_failure_midway_leaves_the_previous_output_untouched(capsys, tmp_path, digits_npz, reference_artifacts):
    out = tmp_path / "acts.npz"
    out.write_bytes(b"previous results")
    # The first input streams through several batches before the second one's shape is found wrong.
    code, _, err = cli(capsys, "run", reference_artifacts, "--input", digits_npz, wrong_shape_npy(tmp_path),
                       "--out", out, "--batch-size", 8)
    assert_one_line_error(code, err, "got shape [4, 27, 28]")
    assert out.read_bytes() == b"previous results"
    assert leftovers(tmp_path) == []


# --- through a real interpreter -------------------------------------------------------------------

def python_m_runtime(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime", *map(str, argv)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_python_m_runtime_errors_have_no_traceback(tmp_path, reference_artifacts):
    for argv, message in (
        (["run", reference_artifacts, "--input", tmp_path / "missing.npz", "--out", tmp_path / "a.npz"], "not found"),
        (["run", reference_artifacts, "--out", tmp_path / "a.npz"], "required: --input"),
        (["info", tmp_path / "nowhere", "--backend", "onnx"], "does not exist"),
    ):
        proc = python_m_runtime(*argv)
        assert proc.returncode == 2 and proc.stdout == ""
        assert (proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
                and message in proc.stderr), proc.stderr


def test_python_m_runtime_run_writes_what_model_run_gives(tmp_path, digits, loaded, reference_artifacts):
    np.save(tmp_path / "x.npy", digits[0][:6])
    proc = python_m_runtime("run", reference_artifacts, "--input", tmp_path / "x.npy", "--out", tmp_path / "a.npz",
                            "--outputs", "conv2d")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert_close(read_npz(tmp_path / "a.npz"), loaded(reference_artifacts, "onnx").run(digits[0][:6], ["conv2d"]))


# --- pieces ---------------------------------------------------------------------------------------

def test_progress_bar_only_on_a_terminal(monkeypatch):
    from runtime.jobs.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, quiet, shown in ((Terminal(), False, True), (Terminal(), True, False), (io.StringIO(), False, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_bar(100, quiet) as bar:
            bar.update(40)
        assert ("/100 [" in stream.getvalue()) == shown, stream.getvalue()


def test_npz_writer_is_atomic(tmp_path):
    target = tmp_path / "a.npz"
    with NpzWriter(target, 5) as writer:
        writer.append({"x": np.ones((2, 3), np.float32)})
        writer.append({"x": np.zeros((3, 3), np.float32)})
        assert not target.exists()  # nothing visible before commit
        assert writer.commit() == {"x": (5, 3)}
    np.testing.assert_array_equal(read_npz(target)["x"], np.r_[np.ones((2, 3)), np.zeros((3, 3))])
    with pytest.raises(RuntimeError, match=r"expected 5 rows per output, wrote \{'x': 2\}"):
        with NpzWriter(tmp_path / "b.npz", 5) as writer:
            writer.append({"x": np.ones((2, 3), np.float32)})
            writer.commit()
    assert not (tmp_path / "b.npz").exists() and leftovers(tmp_path) == []
    assert json.loads(json.dumps(sorted(os.listdir(tmp_path)))) == ["a.npz"]
