"""viz.tiling: the mosaic checked pixel by pixel on known arrays."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import InputError
from viz.tiling import default_cols, grid_shape, normalize_maps, tile


def numbered_maps(h: int, w: int, c: int) -> np.ndarray:
    """[H,W,C] maps whose every pixel is distinct and says where it is: 100*channel + row*w + col."""
    base = np.arange(h * w, dtype=np.float32).reshape(h, w, 1)
    return base + 100.0 * np.arange(c, dtype=np.float32)


def reference_tile(maps: np.ndarray, cols: int, pad: int, pad_value: float) -> np.ndarray:
    """The obvious loop, as an independent oracle for the vectorised tile()."""
    h, w, c = maps.shape
    rows = -(-c // cols)
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad), pad_value, np.float32)
    for i in range(c):
        r, k = divmod(i, cols)
        out[r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = maps[..., i]
    return out


def test_placement_and_padding_pixel_by_pixel():
    maps = numbered_maps(2, 3, 5)
    mosaic = tile(maps, cols=3, pad=1, normalize="none", pad_value=-1)
    expected = np.array([
        [0, 1, 2, -1, 100, 101, 102, -1, 200, 201, 202],
        [3, 4, 5, -1, 103, 104, 105, -1, 203, 204, 205],
        [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
        [300, 301, 302, -1, 400, 401, 402, -1, -1, -1, -1],
        [303, 304, 305, -1, 403, 404, 405, -1, -1, -1, -1],
    ], dtype=np.float32)
    assert mosaic.dtype == np.float32
    np.testing.assert_array_equal(mosaic, expected)


@pytest.mark.parametrize("c", [1, 2, 3, 5, 7, 10, 16, 30, 31, 32, 33, 64])
@pytest.mark.parametrize("pad", [0, 1, 3])
def test_matches_the_loop_for_any_channel_count(c, pad):
    maps = numbered_maps(4, 5, c)
    cols = default_cols(c)
    np.testing.assert_array_equal(tile(maps, pad=pad, normalize="none", pad_value=-7),
                                  reference_tile(maps, cols, pad, -7))


def test_pad_zero_has_no_gaps():
    maps = numbered_maps(2, 2, 4)
    np.testing.assert_array_equal(
        tile(maps, cols=2, pad=0, normalize="none"),
        [[0, 1, 100, 101], [2, 3, 102, 103], [200, 201, 300, 301], [202, 203, 302, 303]],
    )


@pytest.mark.parametrize("c, rows, cols", [(1, 1, 1), (3, 2, 2), (4, 2, 2), (10, 3, 4), (15, 4, 4),
                                           (16, 2, 8), (30, 4, 8), (32, 4, 8), (64, 8, 8), (100, 13, 8)])
def test_default_grid(c, rows, cols):
    assert grid_shape(c) == (rows, cols)


def test_reference_layer_sizes():
    # 32 maps of 26x26 -> 4x8 grid; 64 maps of 11x11 -> 8x8, with 1-pixel gaps.
    assert tile(np.random.rand(26, 26, 32)).shape == (4 * 27 - 1, 8 * 27 - 1)
    assert tile(np.random.rand(11, 11, 64)).shape == (8 * 12 - 1, 8 * 12 - 1)


def test_thirty_maps_leave_two_empty_cells_of_pad_value():
    # The seed tutorial's rows = n // cols loses the last 6 of 30 maps; here they are all drawn.
    maps = numbered_maps(2, 2, 30) + 1.0
    mosaic = tile(maps, normalize="none", pad_value=0.0)
    assert mosaic.shape == (4 * 3 - 1, 8 * 3 - 1)
    last_row = mosaic[9:11]
    np.testing.assert_array_equal(last_row[:, 5 * 3:5 * 3 + 2], maps[..., 29])  # map 29 in column 5
    assert (last_row[:, 6 * 3 - 1:] == 0.0).all()  # columns 6 and 7 empty
    drawn = {int(v) // 100 for v in np.unique(mosaic) if v > 0}
    assert drawn == set(range(30))


def test_explicit_cols_and_cap_at_channel_count():
    maps = numbered_maps(2, 2, 3)
    assert tile(maps, cols=1).shape == (3 * 3 - 1, 2)
    assert tile(maps, cols=8).shape == (2, 3 * 3 - 1)  # 8 columns for 3 maps: capped at 3


def test_normalize_per_map():
    maps = numbered_maps(2, 3, 4)
    mosaic = tile(maps, cols=4, pad=1, normalize="map")
    step = np.arange(6, dtype=np.float32).reshape(2, 3) / 5
    for i in range(4):
        np.testing.assert_allclose(mosaic[:, i * 4:i * 4 + 3], step, rtol=1e-6)
    assert (mosaic[:, 3::4] == 1.0).all()  # padding white by default when normalised


def test_normalize_per_layer():
    maps = numbered_maps(2, 3, 2)  # values 0..5 and 100..105
    mosaic = tile(maps, cols=2, normalize="layer")
    np.testing.assert_allclose(mosaic[:, :3], maps[..., 0] / 105, rtol=1e-6)
    np.testing.assert_allclose(mosaic[:, 4:], maps[..., 1] / 105, rtol=1e-6)
    assert mosaic.min() == 0.0 and mosaic.max() == 1.0


def test_normalize_none_keeps_raw_values_and_pads_with_the_max():
    maps = numbered_maps(2, 2, 2) - 50
    mosaic = tile(maps, cols=2, normalize="none")
    np.testing.assert_array_equal(mosaic[:, :2], maps[..., 0])
    assert (mosaic[:, 2] == maps.max()).all()


@pytest.mark.parametrize("normalize", ["map", "layer"])
def test_dead_maps_are_flat_zero_without_nan_or_warning(normalize):
    maps = np.zeros((3, 3, 4), np.float32)
    maps[..., 1] = 7.5  # constant but alive
    maps[..., 2] = np.arange(9).reshape(3, 3)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        mosaic = tile(maps, cols=4, pad=1, normalize=normalize)
    assert np.isfinite(mosaic).all()
    np.testing.assert_array_equal(mosaic[:, 0:3], 0.0)  # dead
    if normalize == "map":
        np.testing.assert_array_equal(mosaic[:, 4:7], 0.0)  # constant map: flat
        np.testing.assert_allclose(mosaic[:, 8:11], np.arange(9).reshape(3, 3) / 8)
    else:
        np.testing.assert_allclose(mosaic[:, 4:7], 7.5 / 8)  # scaled by the layer's range 0..8


def test_all_dead_layer_is_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mosaic = tile(np.zeros((2, 2, 3)), cols=3, normalize="layer", pad_value=0.5)
    np.testing.assert_array_equal(mosaic, [[0, 0, .5, 0, 0, .5, 0, 0], [0, 0, .5, 0, 0, .5, 0, 0]])


def test_channel_first_and_batched_layouts_give_the_same_mosaic():
    hwc = numbered_maps(3, 4, 6)
    expected = tile(hwc)
    np.testing.assert_array_equal(tile(np.moveaxis(hwc, -1, 0), layout="CHW"), expected)
    np.testing.assert_array_equal(tile(hwc[None], layout="NHWC"), expected)
    np.testing.assert_array_equal(tile(np.moveaxis(hwc, -1, 0)[None], layout="NCHW"), expected)


def test_integer_and_bool_maps_are_accepted():
    np.testing.assert_array_equal(tile(np.eye(2, dtype=np.uint8)[..., None], normalize="none"), np.eye(2))
    np.testing.assert_array_equal(tile(np.eye(2, dtype=bool)[..., None]), np.eye(2))


def test_normalize_maps_rejects_unknown_mode():
    with pytest.raises(InputError, match="unknown normalisation 'max'"):
        normalize_maps(np.zeros((1, 1, 1), np.float32), "max")


@pytest.mark.parametrize("maps, kwargs, match", [
    (np.zeros((2, 10)), {"layout": "NC"}, "cannot draw layout 'NC'"),
    (np.zeros((2, 2, 3)), {"layout": "NHWC"}, "rank 4; got shape \\[2, 2, 3\\]"),
    (np.zeros((2, 4, 4, 3)), {"layout": "NHWC"}, "batch of 2"),
    (np.zeros((4, 4, 0)), {}, "0 channels"),
    (np.zeros((4, 4, 3)), {"cols": 0}, "cols must be a positive integer"),
    (np.zeros((4, 4, 3)), {"cols": 2.5}, "cols must be a positive integer"),
    (np.zeros((4, 4, 3)), {"pad": -1}, "pad must be a non-negative integer"),
    (np.zeros((4, 4, 3)), {"normalize": "global"}, "unknown normalisation"),
    (np.array([[[np.nan]]]), {}, "1 NaN or infinite"),
    (np.array([[["a"]]]), {}, "must be numeric"),
])
def test_bad_input_raises_one_line_input_error(maps, kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        tile(maps, **kwargs)
    assert "\n" not in str(info.value)


def test_tiling_does_not_import_matplotlib():
    import subprocess

    code = "import sys, numpy as np, viz.tiling as t; t.tile(np.ones((2,2,3))); print('matplotlib' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
