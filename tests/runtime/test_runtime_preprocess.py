"""runtime.preprocess.to_batch: the one place where images are checked and turned into the model input."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.artifacts.manifest import InputSpec, Preprocessing
from runtime.errors import InputError
from runtime.preprocess import is_batch, to_batch

GRAY = InputSpec("image", "float32", (None, 28, 28, 1), "NHWC", Preprocessing())
RGB = InputSpec("image", "float32", (None, 8, 6, 3), "NHWC", Preprocessing())
CENTRED = InputSpec("image", "float32", (None, 28, 28, 1), "NHWC", Preprocessing(scale=1 / 127.5, offset=-1.0))


@pytest.mark.parametrize("shape, n", [((28, 28), 1), ((28, 28, 1), 1), ((5, 28, 28), 5), ((5, 28, 28, 1), 5),
                                      ((0, 28, 28), 0), ((0,), 0)])
def test_gray_shapes(shape, n):
    x = to_batch(np.zeros(shape, np.uint8), GRAY)
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32 and x.flags.c_contiguous


@pytest.mark.parametrize("shape, n", [((8, 6, 3), 1), ((4, 8, 6, 3), 4), ((0, 8, 6, 3), 0)])
def test_rgb_shapes(shape, n):
    assert to_batch(np.zeros(shape, np.uint8), RGB).shape == (n, 8, 6, 3)


@pytest.mark.parametrize("shape", [(8, 6), (4, 8, 6), (6, 8, 3), (8, 6, 1), (1, 8, 6, 1)])
def test_rgb_rejects_other_shapes_naming_the_accepted_ones(shape):
    with pytest.raises(InputError, match=r"must be \[H,W,C\] or \[N,H,W,C\] with H,W,C = 8,6,3; got shape"):
        to_batch(np.zeros(shape, np.uint8), RGB)


def test_is_batch_tells_batches_from_single_images():
    assert is_batch(np.zeros((3, 28, 28)), GRAY) and is_batch(np.zeros((1, 28, 28, 1)), GRAY)
    assert not is_batch(np.zeros((28, 28)), GRAY) and not is_batch(np.zeros((28, 28, 1)), GRAY)
    assert is_batch(np.zeros((2, 8, 6, 3)), RGB) and not is_batch(np.zeros((8, 6, 3)), RGB)


def test_pixels_follow_the_declared_preprocessing():
    x = np.array([0, 51, 255], np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2)
    np.testing.assert_allclose(to_batch(x, GRAY)[:, 0, 0, 0], [0, 0.2, 1], rtol=1e-6)
    np.testing.assert_allclose(to_batch(x, CENTRED)[:, 0, 0, 0], [-1, -0.6, 1], rtol=1e-6, atol=1e-6)


def test_float_ranges_follow_the_declared_preprocessing():
    ok = np.full((28, 28), -0.9, np.float32)
    assert to_batch(ok, CENTRED).min() == np.float32(-0.9)
    with pytest.raises(InputError, match=r"\[0, 1\]; got values in \[-0.9, -0.9\]"):
        to_batch(ok, GRAY)
    to_batch(np.full((28, 28), 1.0005, np.float32), GRAY)  # rounding slack
    with pytest.raises(InputError, match=r"\[-1, 1\]; got values in \[1.5, 1.5\]"):
        to_batch(np.full((28, 28), 1.5), CENTRED)


def test_float_dtypes_become_contiguous_float32():
    for dtype in (np.float16, np.float64):
        x = to_batch(np.full((2, 28, 28), 0.5, dtype), GRAY)
        assert x.dtype == np.float32 and x.flags.c_contiguous and float(x.max()) == 0.5
    strided = np.zeros((4, 28, 28), np.float32)[::2]
    assert to_batch(strided, GRAY).flags.c_contiguous


def test_uint8_is_not_range_checked_but_other_integers_are():
    assert to_batch(np.full((28, 28), 255, np.uint8), GRAY).max() == 1.0
    assert to_batch(np.full((28, 28), 255, np.int32), GRAY).max() == 1.0
    with pytest.raises(InputError, match=r"0\.\.255; got 0\.\.256"):
        to_batch(np.arange(784, dtype=np.int32).reshape(28, 28) % 257, GRAY)


def test_nan_and_inf_are_counted():
    x = np.zeros((2, 28, 28), np.float32)
    x[0, 0, :3] = np.nan
    x[1, 5, 5] = -np.inf
    with pytest.raises(InputError, match="images contain 4 NaN or infinite values; expected finite floats"):
        to_batch(x, GRAY)


def test_pixels_are_not_modified_in_place():
    x = np.full((28, 28), 7, np.uint8)
    to_batch(x, GRAY)
    assert (x == 7).all()
