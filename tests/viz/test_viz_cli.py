"""`python -m viz`: layer selection and figure writing on a fake model, then end to end on real artifacts.

The end-to-end tests use the session fixture `reference_artifacts` (tests/conftest.py):
the exported reference model.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.cli.process import run_cli
from runtime.data.mnist import shipped_digits
from runtime.errors import InputError
from viz.cli import main
from viz.draw import select_layers, write_figures

ROOT = Path(__file__).resolve().parents[2]


def decode(path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


def assert_gray_not_blank(path) -> Image.Image:
    img = decode(path)
    rgb = np.asarray(img.convert("RGB")).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all(), f"{path} is not grayscale"
    lo, hi = img.convert("L").getextrema()
    assert hi - lo > 100, f"{path} looks blank"
    return img


# --- without artifacts --------------------------------------------------------------------------

def test_select_layers_defaults_to_feature_maps_in_manifest_order(fake_model):
    manifest = fake_model.manifest
    assert select_layers(manifest) == ["conv2d", "conv2d_1"]
    assert select_layers(manifest, ["conv2d_1", "conv2d", "conv2d_1"]) == ["conv2d_1", "conv2d"]


def test_select_layers_rejects_unknown_and_dense_outputs(fake_model):
    with pytest.raises(InputError, match=r"unknown layer\(s\) \['conv3'\]; available: \['dense_1', 'conv2d', "):
        select_layers(fake_model.manifest, ["conv2d", "conv3"])
    with pytest.raises(InputError, match="'dense_1' has layout NC .* drawable: \\['conv2d', 'conv2d_1'\\]"):
        select_layers(fake_model.manifest, ["dense_1"])


def test_write_figures_on_a_fake_model(tmp_path, fake_model):
    digit = shipped_digits()[0][0]
    written = write_figures(fake_model, digit, tmp_path / "out", cols=4, labels=False, title="t", raw=True)
    assert [p.name for p in written] == ["conv2d.png", "conv2d_1.png", "comparison.png"]
    assert fake_model.calls == [["conv2d", "conv2d_1", "dense_1"]]  # dense_1: the prediction
    assert decode(written[0]).size == ((4 * 27 - 1) * 4, (8 * 27 - 1) * 4)  # raw: 32 maps in 4 columns
    for path in written:
        assert_gray_not_blank(path)
    assert sorted(os.listdir(tmp_path / "out")) == ["comparison.png", "conv2d.png", "conv2d_1.png"]  # no temp files


def test_write_figures_file_names_are_never_paths(tmp_path, fake_model):
    from runtime.artifacts.manifest import OutputSpec

    odd = OutputSpec("../block/conv", "conv", "Conv2D", (None, 26, 26, 32), "NHWC", "feature_map")
    fake_model.manifest.outputs[1] = odd
    fake_model.output_names = fake_model.manifest.output_names
    written = write_figures(fake_model, np.zeros((28, 28), np.uint8), tmp_path, layers=["../block/conv"])
    assert written[0] == tmp_path / "_block_conv.png"


# --- end to end on the reference artifacts ---------------------------------------------------------

def test_default_run_writes_one_grid_per_feature_map_and_a_comparison(reference_artifacts, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main([str(reference_artifacts), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "conv2d.png"), str(out / "conv2d_1.png"), str(out / "comparison.png")]
    for path in printed:  # headed figures: see tests/viz/test_figures.py for their contents
        assert_gray_not_blank(path)
    assert main([str(reference_artifacts), "--out", str(out), "--raw"]) == 0
    first, second = (decode(p) for p in capsys.readouterr().out.split()[:2])
    assert (first.mode, first.size) == ("L", (215 * 4, 107 * 4))  # raw: 32 maps, 4x8
    assert (second.mode, second.size) == ("L", (95 * 9, 95 * 9))  # raw: 64 maps, 8x8


def test_image_file_gives_the_same_maps_as_the_same_test_digit(reference_artifacts, tmp_path, capsys):
    digit = shipped_digits()[0][0]
    Image.fromarray(255 - digit).convert("RGB").save(tmp_path / "digit.png")  # dark on light, colour
    assert main([str(reference_artifacts), "--index", "0", "--out", str(tmp_path / "a"), "--layers", "conv2d",
                 "--raw"]) == 0
    assert main([str(reference_artifacts), "--image", str(tmp_path / "digit.png"), "--invert",
                 "--out", str(tmp_path / "b"), "--layers", "conv2d", "--raw"]) == 0
    capsys.readouterr()
    assert (tmp_path / "a" / "conv2d.png").read_bytes() == (tmp_path / "b" / "conv2d.png").read_bytes()


def test_layers_cols_labels_and_normalize_options(reference_artifacts, tmp_path, capsys):
    out = tmp_path / "o"
    argv = [str(reference_artifacts), "--out", str(out), "--layers", "conv2d_1", "--cols", "4", "--normalize", "layer",
            "--raw"]
    assert main(argv) == 0
    assert capsys.readouterr().out.split() == [str(out / "conv2d_1.png"), str(out / "comparison.png")]
    assert decode(out / "conv2d_1.png").size == (47 * 5, 191 * 5)  # 64 maps in 16 rows of 4
    assert main(argv + ["--labels"]) == 0
    assert_gray_not_blank(out / "conv2d_1.png")


def test_index_into_the_full_test_set(reference_artifacts, tmp_path, capsys, mnist_npz):
    assert main([str(reference_artifacts), "--data", str(mnist_npz), "--index", "9999", "--out", str(tmp_path)]) == 0
    assert "comparison.png" in capsys.readouterr().out


@pytest.mark.parametrize("args, expected", [
    (["--layers", "conv2d,conv9"], "unknown layer(s) ['conv9']; available: ['dense_1', 'conv2d', 'conv2d_1']"),
    (["--layers", "dense_1"], "'dense_1' has layout NC"),
    (["--index", "64"], "--index 64 is out of range for the 64 MNIST test digits shipped with featuremaps: "
                        "valid indices are 0..63"),
    (["--index", "-1"], "valid indices are 0..63"),
    (["--image", "{tmp}/missing.png"], "cannot read image '{tmp}/missing.png': No such file or directory; "
                                       "expected PNG"),
    (["--image", "{tmp}/notes.txt"], "cannot read image '{tmp}/notes.txt': not an image format Pillow recognises"),
    (["--data", "{tmp}/none.npz"], "MNIST file from --data not found"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--cols", "0"], "argument --cols: expected a positive integer, got 0"),
    (["--out", "/proc/figures"], "cannot create the --out folder /proc/figures"),
    (["--out", "{tmp}/notes.txt"], "--out {tmp}/notes.txt exists and is not a folder"),
    (["--index", "1", "--image", "x.png"], "argument --image: not allowed with argument --index"),
])
def test_bad_inputs_give_one_line_errors_and_write_nothing(
        reference_artifacts, tmp_path, capsys, shipped_digits_only, args, expected):
    (tmp_path / "notes.txt").write_text("not a picture\n")
    args = [a.format(tmp=tmp_path) for a in args]
    out = tmp_path / "figures"
    assert run_cli(main, [str(reference_artifacts), "--out", str(out), *args], flags={"path": "--data"}) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert expected.format(tmp=tmp_path) in captured.err
    assert not out.exists()


def test_missing_artifacts_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "viz", str(tmp_path / "nowhere"), "--out", str(tmp_path / "f")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: artifacts folder ")
    assert "nowhere" in proc.stderr


def test_onnx_default_needs_no_tensorflow(reference_artifacts, tmp_path):
    code = ("import sys; from runtime.cli.process import run_cli; from viz.cli import main; "
            f"rc = run_cli(main, [{str(reference_artifacts)!r}, '--out', {str(tmp_path)!r}]); "
            "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.split()[-3:] == ["0", "False", "False"], proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["comparison.png", "conv2d.png", "conv2d_1.png"]


def test_comparison_shows_the_prediction(reference_artifacts, tmp_path, capsys, shipped_digits_only):
    import runtime
    from viz.draw import prediction_text

    assert prediction_text(np.array([0.1, 0.7, 0.2], np.float32), ["cat", "dog", "eel"]) == "predicted dog (p = 0.700)"
    assert prediction_text(np.array([-2.0, 5.0])) == "predicted 1 (score = 5.000)"
    with runtime.load(reference_artifacts) as model:
        probs = model.run(shipped_digits()[0][:1], outputs=["dense_1"])["dense_1"][0]
        written = write_figures(model, shipped_digits()[0][0], tmp_path, layers=["conv2d"])
    assert written[-1].name == "comparison.png"
    assert prediction_text(probs, [str(i) for i in range(10)]) == "predicted 7 (p > 0.999)"


def test_index_on_a_model_of_another_input_shape_resizes_the_digit_as_the_export_does(zoo_artifacts, tmp_path,
                                                                                       capsys):
    """A 32x32x3 model: the shipped digit, resized (nearest) and repeated over channels as the export verified it."""
    import runtime
    from runtime.data.mnist import resize_digits

    artifacts = zoo_artifacts("rgb_small")
    out = tmp_path / "figures"
    assert main([str(artifacts), "--index", "3", "--out", str(out), "--raw"]) == 0
    written = capsys.readouterr().out.split()
    assert written[-1] == str(out / "comparison.png")
    with runtime.load(artifacts) as model:
        name = model.manifest.outputs[1].name
        expected = resize_digits(shipped_digits()[0][3:4], (32, 32, 3))[0]
        maps = model.run(expected, outputs=[name])[name]
    from viz.figures import save_grid

    save_grid(maps, tmp_path / "expected.png", layout="NHWC")
    assert (out / f"{name}.png").read_bytes() == (tmp_path / "expected.png").read_bytes()
