"""Nested models are first-class: every convolution at any depth, path-derived names, --layers forms, --list-layers."""
from __future__ import annotations

import pytest

import runtime
from export.cli import main
from export.graph import conv_classes, select_layers, trace
from runtime.artifacts.paths import safe_name
from runtime.cli.process import run_cli
from runtime.errors import ExportError

BASE = "mobilenetv2_0.35_32"


def two_bases():
    """Two sub-models with the same inner layer names, one nested two deep, in a functional model."""
    import keras
    from keras import layers

    def block(name):
        inner = keras.Sequential([keras.Input((8, 8, 4)), layers.Conv2D(4, 3, padding="same", name="conv")],
                                 name=f"{name}_inner")
        return keras.Sequential([keras.Input((8, 8, 4)), layers.Conv2D(4, 1, name="conv"), inner], name=name)

    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inp)
    x = block("left")(x)
    x = block("right")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(2, activation="softmax", name="probs")(x), name="two_bases")


@pytest.fixture(scope="session")
def two_bases_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("nested") / "two_bases.keras"
    two_bases().save(path)
    return path


def test_default_exposes_every_nested_convolution_in_execution_order(app_artifacts, app_model_file):
    import keras

    manifest = runtime.read_manifest(app_artifacts("transfer_mobilenet"))
    base = keras.models.load_model(app_model_file("transfer_mobilenet")).get_layer(BASE)
    convs = [layer.name for layer in base.layers if isinstance(layer, conv_classes())]  # a functional's order
    maps = [o for o in manifest.outputs if o.role == "feature_map"]
    assert [o.layer for o in maps] == [f"{BASE}/{c}" for c in convs]  # the full path is the source layer
    assert [o.name for o in maps] == [f"{BASE}.{c}" for c in convs]
    assert len(convs) == 52 and manifest.outputs[0].name == "head"
    names = manifest.output_names
    assert len(set(names)) == len(names) and all(safe_name(n) == n for n in names)


def test_nested_names_in_all_forms(two_bases_file):
    import keras

    traced = trace(keras.models.load_model(two_bases_file))
    paths = [n.path for n in traced.layers]
    assert paths == ["stem", "left/conv", "left/left_inner/conv", "left/left_inner", "left", "right/conv",
                     "right/right_inner/conv", "right/right_inner", "right", "gap", "probs"]
    assert [n.path for n in select_layers(traced.layers)] == ["stem", "left/conv", "left/left_inner/conv",
                                                              "right/conv", "right/right_inner/conv"]
    pick = lambda *names: [n.name for n in select_layers(traced.layers, list(names))]  # noqa: E731
    assert pick("left/left_inner/conv", "right.conv", "left_inner", "stem") == [
        "left.left_inner.conv", "right.conv", "left.left_inner", "stem"]
    with pytest.raises(ExportError, match=r"'conv' is ambiguous: it names \['left/conv', 'left/left_inner/conv', "
                                          r"'right/conv', 'right/right_inner/conv'\]"):
        select_layers(traced.layers, ["conv"])


@pytest.mark.parametrize("value, message", [
    ("conv", "ambiguous"), ("nope", "unknown layer name 'nope'"), (",", "no layer names given"),
    ("left/nope", "unknown layer name 'left/nope'"), ("input_layer", "unknown layer name"),
])
def test_bad_layers_values_are_one_line_errors(capsys, tmp_path, two_bases_file, value, message):
    assert run_cli(main, ["--model", str(two_bases_file), "--out", str(tmp_path / "a"), "--layers", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_nested_model_outputs_export_and_verify(capsys, tmp_path, two_bases_file):
    out = tmp_path / "a"
    assert run_cli(main, ["--model", str(two_bases_file), "--out", str(out), "--layers",
                          "left,right/right_inner/conv,left_inner"]) == 0
    manifest = runtime.read_manifest(out)
    assert manifest.output_names == ["probs", "left", "right.right_inner.conv", "left.left_inner"]
    assert [o.layer_class for o in manifest.outputs[1:]] == ["Sequential", "Conv2D", "Sequential"]
    assert manifest.verification["passed"]


def test_list_layers_prints_the_tree(capsys, two_bases_file):
    assert run_cli(main, ["--model", str(two_bases_file), "--list-layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "two_bases (Functional), input [None, 8, 8, 3]"
    # '*' in the first column marks a layer exposed by default; then the path (what --layers takes), indented
    rows = [(line[0], len(line) - len(line[1:].lstrip()), *line[1:].split(maxsplit=2)) for line in lines[1:-1]]
    assert rows[:5] == [("*", 2, "stem", "Conv2D", "[None, 8, 8, 4]"),
                        (" ", 2, "left", "Sequential", "[None, 8, 8, 4]"),
                        ("*", 4, "left/conv", "Conv2D", "[None, 8, 8, 4]"),
                        (" ", 4, "left/left_inner", "Sequential", "[None, 8, 8, 4]"),
                        ("*", 6, "left/left_inner/conv", "Conv2D", "[None, 8, 8, 4]")]
    assert rows[-1] == (" ", 2, "probs", "Dense", "[None, 2]")
    assert lines[-1] == ("11 layers; '*' marks the 5 exposed by default (every Conv1D, Conv2D, Conv3D, "
                         "Conv1DTranspose, Conv2DTranspose, Conv3DTranspose, DepthwiseConv1D, DepthwiseConv2D, "
                         "SeparableConv1D, SeparableConv2D); --layers takes the paths shown")


def test_a_mistyped_layer_name_suggests_the_closest(capsys, tmp_path, two_bases_file):
    assert run_cli(main, ["--model", str(two_bases_file), "--out", str(tmp_path / "a"), "--layers", "rigth/conv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown layer name 'rigth/conv'; did you mean 'right/conv' or ")  # closest first
    assert err.endswith("? (`python -m export --list-layers` lists all 11)\n") and err.count("\n") == 1
