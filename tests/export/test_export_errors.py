"""Bad input to the exporter: one clear line, exit code 2, nothing half-written, old artifacts kept."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import export.pipeline as pipeline
from export.cli import main
from export.pipeline import ExportOptions, export_model
from runtime.artifacts.manifest import read_manifest
from runtime.cli.process import run_cli
from runtime.errors import DataError, ExportError


def cli_error(capsys, *args) -> str:
    """Run the CLI in-process; assert exit code 2 and a single `error:` line; return it."""
    assert run_cli(main, list(args)) == 2
    # progress lines ("export: <stage> done in ...") may precede the error: stages that finished
    err = "\n".join(line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("export: "))
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def save(model, path):
    model.save(path)
    return path


@pytest.fixture(scope="module")
def dense_only_model(tmp_path_factory):
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Flatten(name="flat"),
                              layers.Dense(10, activation="softmax", name="out")])
    return save(model, tmp_path_factory.mktemp("m") / "dense.keras")


@pytest.fixture(scope="module")
def vector_input_model(tmp_path_factory):
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((784,)), layers.Dense(10, name="out")])
    return save(model, tmp_path_factory.mktemp("m") / "vector.keras")


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1))
    x = layers.Lambda(lambda t: t * 2.0, name="double")(inp)
    x = layers.Conv2D(4, 3, name="conv")(x)
    return save(keras.Model(inp, x), tmp_path_factory.mktemp("m") / "lambda.keras")


@pytest.fixture
def published(tmp_path, reference_artifacts):
    """An existing artifacts folder (a copy of the session's) whose content must survive failures."""
    import shutil

    out = tmp_path / "artifacts"
    shutil.copytree(reference_artifacts, out)
    return out, sorted(p.relative_to(out) for p in out.rglob("*")), (out / "manifest.json").read_bytes()


def assert_untouched(published):
    out, listing, manifest = published
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == listing
    assert (out / "manifest.json").read_bytes() == manifest
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_missing_model(capsys, tmp_path):
    err = cli_error(capsys, "--model", str(tmp_path / "nope.keras"), "--out", str(tmp_path / "a"))
    assert "not found" in err and ".keras" in err
    assert not (tmp_path / "a").exists()


def test_corrupt_model(capsys, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(os.urandom(2048))
    assert "cannot read" in cli_error(capsys, "--model", str(bad), "--out", str(tmp_path / "a"))
    truncated = tmp_path / "truncated.keras"
    from export.reference import REFERENCE_MODEL

    truncated.write_bytes(REFERENCE_MODEL.read_bytes()[:50_000])
    assert "cannot read" in cli_error(capsys, "--model", str(truncated), "--out", str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_unsupported_suffix(capsys, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    assert ".keras" in cli_error(capsys, "--model", str(path), "--out", str(tmp_path / "a"))


def test_no_conv_layer(capsys, tmp_path, dense_only_model):
    err = cli_error(capsys, "--model", str(dense_only_model), "--out", str(tmp_path / "a"))
    assert "has no convolution (Conv1D/2D/3D, transposed, depthwise or separable)" in err
    assert "'flat'" in err and "--layers" in err


def test_no_conv_layer_but_layers_given(tmp_path, dense_only_model):
    manifest = export_model(dense_only_model, tmp_path / "a", ExportOptions(layers=["flat"]))
    assert manifest.output_names == ["out", "flat"]


def test_unknown_layer(capsys, tmp_path, reference_model_path):
    err = cli_error(capsys, "--model", str(reference_model_path), "--out", str(tmp_path / "a"),
                    "--layers", "conv2d,conv9")
    assert "unknown layer name 'conv9'; did you mean 'conv2d'" in err and "--list-layers" in err
    assert not (tmp_path / "a").exists()


def test_input_not_an_image(capsys, tmp_path, vector_input_model):
    err = cli_error(capsys, "--model", str(vector_input_model), "--out", str(tmp_path / "a"))
    assert "[batch, H, W, C]" in err and "784" in err


def test_existing_output_needs_force(capsys, published, reference_model_path):
    out = published[0]
    err = cli_error(capsys, "--model", str(reference_model_path), "--out", str(out))
    assert "already exists" in err and "--force" in err
    with pytest.raises(ExportError, match="already exists; pass `force=True`"):  # the library names its parameter
        export_model(reference_model_path, out)
    assert_untouched(published)


def test_force_replaces(published, zoo_model_file):
    out = published[0]
    assert run_cli(main, ["--model", str(zoo_model_file("rgb_small")), "--out", str(out), "--force"]) == 0
    assert read_manifest(out).input.shape == (None, 32, 32, 3)
    assert [p.name for p in out.parent.iterdir()] == ["artifacts"]


def test_output_not_writable(capsys, tmp_path, reference_model_path):
    err = cli_error(capsys, "--model", str(reference_model_path), "--out", str(tmp_path / "missing" / "a"))
    assert "does not exist" in err
    afile = tmp_path / "file"
    afile.write_text("x")
    assert "not a folder" in cli_error(capsys, "--model", str(reference_model_path), "--out", str(afile), "--force")
    # /proc refuses new folders even to root, where permission bits do not
    assert "cannot write" in cli_error(capsys, "--model", str(reference_model_path), "--out", "/proc/fm_artifacts")


def test_lambda_refused_unless_allowed(capsys, tmp_path, lambda_model):
    err = cli_error(capsys, "--model", str(lambda_model), "--out", str(tmp_path / "a"))
    assert "Lambda" in err and "--allow-unsafe" in err
    with pytest.raises(ExportError, match="pass `allow_unsafe=True`"):
        export_model(lambda_model, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert run_cli(main, ["--model", str(lambda_model), "--out", str(tmp_path / "a"), "--allow-unsafe"]) == 0
    assert read_manifest(tmp_path / "a").verification["passed"]


def test_unknown_custom_object_refused(tmp_path):
    """A custom layer class the loading process does not know: refused with one line, exit 2."""
    import keras

    @keras.saving.register_keras_serializable(package="fmtest")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((28, 28, 1))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3)(Doubler()(inp)))
    path = save(model, tmp_path / "custom.keras")
    result = subprocess.run([sys.executable, "-m", "export", "--model", str(path), "--out", str(tmp_path / "a")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr  # TensorFlow's start-up notices filtered out
    assert result.stderr.startswith("error: ") and "custom objects" in result.stderr
    assert not (tmp_path / "a").exists()


def test_disagreement_fails_and_publishes_nothing(capsys, published, reference_model_path):
    err = cli_error(capsys, "--model", str(reference_model_path), "--out", str(published[0]), "--force",
                    "--atol", "0", "--rtol", "0", "--noise", "0")
    assert "disagree" in err and "nothing published" in err
    assert_untouched(published)


def test_interrupt_keeps_previous_artifacts(monkeypatch, published, reference_model_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(reference_model_path, published[0], ExportOptions(force=True))
    assert_untouched(published)


def test_mnist_offline_message(monkeypatch, tmp_path):
    """No --data, no MNIST_NPZ, empty Keras cache, no network: say how to point at a local file."""
    import runtime.data.mnist as mnist

    monkeypatch.delenv("MNIST_NPZ", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(mnist, "KERAS_URL", "http://127.0.0.1:9/mnist.npz")  # a closed port: offline
    with pytest.raises(DataError, match="local copy with `path` or the MNIST_NPZ"):
        mnist.load_mnist()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial download left
    with pytest.raises(DataError, match="not found"):
        mnist.load_mnist(tmp_path / "missing.npz")


def test_mnist_lookup_order(monkeypatch, tmp_path, mnist_npz):
    import shutil

    import runtime.data.mnist as mnist

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("MNIST_NPZ", raising=False)
    assert mnist.find_mnist(download=False) is None
    cached = mnist.keras_cache_path()
    cached.parent.mkdir(parents=True)
    shutil.copy(mnist_npz, cached)
    assert mnist.find_mnist() == cached
    monkeypatch.setenv("MNIST_NPZ", str(mnist_npz))
    assert mnist.find_mnist() == mnist_npz
    assert mnist.find_mnist(tmp_path / "keras" / "datasets" / "mnist.npz") == cached
    x, y, source = mnist.mnist_test_set()
    assert x.shape == (10000, 28, 28) and y[0] == 7 and "10000" in source


@pytest.mark.parametrize("args, message", [
    (["--opset", "seventeen"], "argument --opset: invalid int value: 'seventeen'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--atol", "-1"], "argument --atol: expected a finite number >= 0, got -1"),
    (["--noise", "nan"], "argument --noise: expected a finite number >= 0, got nan"),
    (["--rtol", "x"], "argument --rtol: expected a number >= 0, got 'x'"),
])
def test_bad_arguments_are_one_line_errors(capsys, args, message):
    assert message in cli_error(capsys, *args)


def test_force_never_deletes_what_is_not_artifacts(capsys, tmp_path, monkeypatch, reference_model_path):
    import shutil

    work = tmp_path / "work"
    work.mkdir()
    model = work / "my.keras"
    shutil.copy(reference_model_path, model)
    (work / "notes.txt").write_text("mine")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    assert "current folder or one of its parents" in cli_error(capsys, "--model", str(model), "--out", ".", "--force")
    assert "current folder or one of its parents" in cli_error(capsys, "--model", str(model), "--out",
                                                                str(tmp_path), "--force")
    assert "holds no manifest.json" in cli_error(capsys, "--model", str(model), "--out", str(docs), "--force")
    monkeypatch.chdir(tmp_path / "docs")
    assert "which the export reads" in cli_error(capsys, "--model", str(model), "--out", str(work), "--force")
    (work / "manifest.json").write_text("{}")  # an artifacts-looking folder
    assert "inside the artifacts folder" in cli_error(capsys, "--model", str(reference_model_path), "--out",
                                                      str(work / "sub"))
    assert sorted(p.name for p in work.iterdir()) == ["manifest.json", "my.keras", "notes.txt"]
    assert [p.name for p in docs.iterdir()] == ["thesis.tex"]


def test_empty_folder_is_a_valid_forced_target(tmp_path, zoo_model_file):
    (tmp_path / "empty").mkdir()
    assert run_cli(main, ["--model", str(zoo_model_file("rgb_small")), "--out", str(tmp_path / "empty"),
                          "--force"]) == 0
    assert read_manifest(tmp_path / "empty").verification["passed"]


def test_channels_first_model_refused(capsys, tmp_path):
    import keras
    from keras import layers

    inp = keras.Input((1, 28, 28))
    x = layers.Conv2D(4, 3, data_format="channels_first", name="cf_conv")(inp)
    model = keras.Model(inp, layers.Dense(3)(layers.Flatten()(x)))
    path = save(model, tmp_path / "cf.keras")
    err = cli_error(capsys, "--model", str(path), "--out", str(tmp_path / "a"))
    assert "['cf_conv'] use data_format='channels_first'" in err and "NHWC" in err
    assert not (tmp_path / "a").exists()


def test_layer_name_that_cannot_name_an_output(capsys, tmp_path):
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1))
    model = keras.Model(inp, layers.Flatten()(layers.Conv2D(2, 3, name="my conv")(inp)))
    path = save(model, tmp_path / "spaces.keras")
    err = cli_error(capsys, "--model", str(path), "--out", str(tmp_path / "a"))
    assert "layer name 'my conv' cannot name an output" in err
    assert [p.name for p in tmp_path.iterdir()] == ["spaces.keras"]  # no temp folder left


def test_corrupt_mnist_data(capsys, tmp_path, mnist_npz, reference_model_path):
    bad = tmp_path / "mnist.npz"
    bad.write_bytes(mnist_npz.read_bytes()[:100_000])
    err = cli_error(capsys, "--model", str(reference_model_path), "--out", str(tmp_path / "a"), "--data", str(bad))
    assert "is not a readable MNIST npz" in err
    assert not (tmp_path / "a").exists()


def test_stderr_holds_only_the_error_line(tmp_path):
    """TensorFlow's start-up notices (absl banner, oneDNN, CUDA) must not bury the one-line error."""
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a model")
    result = subprocess.run([sys.executable, "-m", "export", "--model", str(bad), "--out", str(tmp_path / "a")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: cannot read"), result.stderr
