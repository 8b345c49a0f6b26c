"""runtime.load / Model on every backend: outputs vs the original Keras model, input forms, streaming, errors."""
from __future__ import annotations

import numpy as np
import pytest
from zoo import digits_as

import runtime
from runtime.compare import DEFAULT_TOLERANCE, compare_outputs, failures
from runtime.errors import InputError


def assert_close(actual: dict, reference: dict, tol=DEFAULT_TOLERANCE) -> None:
    problems = failures(compare_outputs(actual, reference), tol)
    assert not problems, problems


def concat(dicts: list[dict]) -> dict:
    return {name: np.concatenate([d[name] for d in dicts]) for name in dicts[0]}


# --- outputs vs Keras -----------------------------------------------------------------------------

@pytest.fixture(params=["reference", "functional_bn", "rgb_small"])
def exported(request, reference_artifacts, reference_model_path, zoo_artifacts, zoo_model_file):
    """(artifacts folder, the .keras file it was exported from)."""
    if request.param == "reference":
        return reference_artifacts, reference_model_path
    return zoo_artifacts(request.param), zoo_model_file(request.param)


def test_outputs_match_the_keras_model(exported, backend, loaded, keras_outputs, digits):
    folder, model_file = exported
    model = loaded(folder, backend)
    x = digits_as(model.input_spec.image_shape, digits[0][:32])  # floats in [0, 1], shaped as the model wants
    got = model.run(x)
    assert list(got) == model.output_names
    for name, array in got.items():
        assert array.dtype == np.float32
        assert array.shape == (32, *model.manifest.output(name).shape[1:])
    assert_close(got, keras_outputs(model_file, model.manifest)(x))


def test_reference_model_classifies_the_shipped_digits(ref_model, digits):
    x, y = digits
    probs = ref_model.run(x, outputs=["dense_1"])["dense_1"]
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(axis=1) == y).mean() >= 0.95


def test_model_describes_itself(ref_model, reference_artifacts):
    assert ref_model.output_names == ["dense_1", "conv2d", "conv2d_1"]
    assert ref_model.input_spec.name == "image" and ref_model.input_spec.image_shape == (28, 28, 1)
    assert ref_model.manifest.output("conv2d").role == "feature_map"
    assert ref_model.device == "cpu" and ref_model.providers
    assert ref_model.backend in repr(ref_model) and ref_model.folder == reference_artifacts


# --- output selection -----------------------------------------------------------------------------

def test_output_subsets_equal_the_full_run(ref_model, digits):
    x = digits[0][:8]
    full = ref_model.run(x)
    for subset in (["conv2d_1"], ["conv2d_1", "dense_1"], "conv2d", ["conv2d", "conv2d", "dense_1"]):
        got = ref_model.run(x, outputs=subset)
        expected = list(dict.fromkeys([subset] if isinstance(subset, str) else subset))
        assert list(got) == expected  # the order asked for, repeats dropped
        for name in expected:
            np.testing.assert_array_equal(got[name], full[name])


# --- input forms ----------------------------------------------------------------------------------

def test_uint8_and_float_inputs_give_identical_results(ref_model, digits):
    x = digits[0][:8]
    pre = ref_model.input_spec.preprocessing
    from_pixels = ref_model.run(x)
    as_declared = x.astype(np.float32) * np.float32(pre.scale) + np.float32(pre.offset)
    for name, array in ref_model.run(as_declared).items():
        np.testing.assert_array_equal(array, from_pixels[name])
    for name, array in ref_model.run(x.astype(np.int64)).items():  # any integer dtype is raw pixels
        np.testing.assert_array_equal(array, from_pixels[name])
    assert_close(ref_model.run(x / 255.0), from_pixels)  # float64, divided: rounding-level difference only


def test_accepted_shapes_agree(ref_model, digits):
    x = digits[0][:3]
    batch = ref_model.run(x)  # [N,H,W]
    for name, array in ref_model.run(x[..., None]).items():  # [N,H,W,C]
        np.testing.assert_array_equal(array, batch[name])
    for image in (x[1], x[1][..., None], x[1:2]):  # [H,W], [H,W,C], [1,H,W]
        for name, array in ref_model.run(image).items():
            assert array.shape[0] == 1
            assert_close({name: array}, {name: batch[name][1:2]})
    assert ref_model.run(list(x))["dense_1"].shape == (3, 10)  # a list of images


def test_rgb_model_takes_channels_last_only(zoo_artifacts, loaded, backend, digits):
    model = loaded(zoo_artifacts("rgb_small"), backend)
    x = (digits_as((32, 32, 3), digits[0][:4]) * 255).round().astype(np.uint8)
    batch = model.run(x)
    one = model.run(x[2])  # [H,W,C]
    assert_close(one, {n: a[2:3] for n, a in batch.items()})
    with pytest.raises(InputError, match=r"\[H,W,C\] or \[N,H,W,C\] with H,W,C = 32,32,3; got shape \[32, 32\]"):
        model.run(x[0, ..., 0])


@pytest.mark.parametrize("empty", [np.zeros((0, 28, 28), np.uint8), np.zeros((0, 28, 28, 1), np.float32), []])
def test_empty_batch_gives_empty_outputs_of_the_right_shapes(ref_model, empty):
    got = ref_model.run(empty)
    assert {n: a.shape for n, a in got.items()} == {"dense_1": (0, 10), "conv2d": (0, 26, 26, 32),
                                                   "conv2d_1": (0, 11, 11, 64)}
    assert all(a.dtype == np.float32 for a in got.values())
    assert list(ref_model.run(empty, outputs=["conv2d"])) == ["conv2d"]


# --- streaming ------------------------------------------------------------------------------------

def test_stream_over_an_array_equals_run(ref_model, digits):
    x = digits[0]
    parts = list(ref_model.stream(x, batch_size=10))
    assert [len(p["dense_1"]) for p in parts] == [10] * 6 + [4]
    assert_close(concat(parts), ref_model.run(x))


def test_stream_over_a_generator_of_single_images_equals_run(ref_model, digits):
    x = digits[0][:40]
    parts = list(ref_model.stream((image for image in x), batch_size=16, outputs=["conv2d_1"]))
    assert [len(p["conv2d_1"]) for p in parts] == [16, 16, 8] and list(parts[0]) == ["conv2d_1"]
    assert_close(concat(parts), ref_model.run(x, outputs=["conv2d_1"]))


def test_stream_regroups_batches_of_any_size(ref_model, digits):
    x = digits[0][:30]
    pieces = [x[:5], x[5], x[6:23], x[23:23], x[23:]]  # batches, a single image, an empty batch
    parts = list(ref_model.stream(iter(pieces), batch_size=8))
    assert [len(p["dense_1"]) for p in parts] == [8, 8, 8, 6]
    assert_close(concat(parts), ref_model.run(x))


def test_stream_of_nothing_yields_nothing(ref_model):
    assert list(ref_model.stream(np.zeros((0, 28, 28), np.uint8))) == []
    assert list(ref_model.stream(iter([]))) == []


def test_stream_checks_its_arguments_before_iterating(ref_model, digits):
    # Errors come from the call itself, not from a later next().
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="batch_size must be an integer of at least 1"):
            ref_model.stream(digits[0], batch_size=bad)
    with pytest.raises(InputError, match="unknown output name"):
        ref_model.stream(digits[0], outputs=["nope"])
    gen = ref_model.stream(iter([digits[0][0], np.zeros((27, 28), np.uint8)]), batch_size=1)
    next(gen)
    with pytest.raises(InputError, match="got shape \\[27, 28\\]"):
        next(gen)


# --- bad inputs -----------------------------------------------------------------------------------

BAD_IMAGES = {
    "wrong shape": (np.zeros((27, 28), np.uint8), r"with H,W = 28,28; got shape \[27, 28\]"),
    "wrong channels": (np.zeros((2, 28, 28, 3), np.uint8), r"got shape \[2, 28, 28, 3\]"),
    "1-d": (np.zeros(784, np.uint8), r"got shape \[784\]"),
    "strings": (np.full((28, 28), "a"), "got dtype <U1"),
    "bool": (np.zeros((28, 28), bool), "got dtype bool"),
    "complex": (np.zeros((28, 28), np.complex64), "got dtype complex64"),
    "ragged": ([np.zeros((28, 28)), np.zeros((3, 3))], "images must be"),
    "objects": (np.array([None, 1], dtype=object), "got dtype object"),
    "NaN": (np.full((28, 28), np.nan, np.float32), "1 NaN|784 NaN or infinite values"),
    "inf": (np.where(np.eye(28) > 0, np.inf, 0.5).astype(np.float32), "28 NaN or infinite values"),
    "0..255 as float": (np.full((28, 28), 200.0, np.float32), r"\[0, 1\]; got values in \[200, 200\] .*as uint8"),
    "negative ints": (np.full((28, 28), -3, np.int16), r"must lie in 0\.\.255; got -3\.\.-3"),
    "ints above 255": (np.full((28, 28), 300, np.uint16), r"got 300\.\.300"),
    "negative floats": (np.full((28, 28), -0.5, np.float32), r"got values in \[-0.5, -0.5\]"),
}


@pytest.mark.parametrize("case", BAD_IMAGES, ids=str)
def test_bad_images_raise_input_errors(ref_model, case):
    images, message = BAD_IMAGES[case]
    with pytest.raises(InputError, match=message) as info:
        ref_model.run(images)
    assert isinstance(info.value, ValueError)  # InputError is also a ValueError, for callers that expect one


def test_unknown_or_no_output_names(ref_model, digits):
    with pytest.raises(InputError, match=r"unknown output name\(s\) \['conv3'\]; available: \['dense_1', 'conv2d', "):
        ref_model.run(digits[0][:1], outputs=["conv2d", "conv3"])
    with pytest.raises(InputError, match="no output names given; available"):
        ref_model.run(digits[0][:1], outputs=[])


def test_closed_model(reference_artifacts, backend, digits):
    with runtime.load(reference_artifacts, backend=backend) as model:
        assert model.run(digits[0][:1])["dense_1"].shape == (1, 10)
    for call in (lambda: model.run(digits[0][:1]), lambda: model.run([]), lambda: model.stream(digits[0])):
        with pytest.raises(InputError, match="model is closed; load it again"):
            call()
    model.close()  # closing twice is harmless
    assert model.backend == backend and model.device == "cpu" and model.providers  # still describes itself
    assert backend in repr(model)


def test_check_values_off_skips_only_the_value_scan(reference_artifacts, backend, digits):
    """check_values=False: same numbers for good input; NaN passes through instead of raising; shapes still checked."""
    x = digits[0][:4, ..., None].astype(np.float32) / 255
    with runtime.load(reference_artifacts, backend=backend) as checked, \
            runtime.load(reference_artifacts, backend=backend, check_values=False) as trusted:
        assert all(np.array_equal(a, b) for a, b in zip(checked.run(x).values(), trusted.run(x).values()))
        bad = np.full((1, 28, 28, 1), np.nan, np.float32)
        with pytest.raises(InputError, match="NaN"):
            checked.run(bad)
        # No error, and no reliable NaN either: TensorFlow's ReLU turns NaN into 0 here, which is
        # why the value scan is on by default.
        assert trusted.run(bad)["dense_1"].shape == (1, 10)
        with pytest.raises(InputError, match="got shape"):
            trusted.run(np.zeros((27, 28), np.float32))
