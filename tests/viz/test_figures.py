"""viz.figures: PNGs decode with the expected size, are grayscale and not blank; Figures never touch pyplot."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from viz.figures import (
    MAX_COMPARISON_MAPS,
    MIN_MAP_PX,
    NORMALIZATION_TEXT,
    comparison_figure,
    grid_figure,
    layer_figure,
    maps_shape_text,
    save_grid,
    save_png,
    to_uint8,
    upscale_factor,
)
from viz.tiling import tile


def relu_maps(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Feature-map-like arrays: mostly zero, some structure, a dead channel."""
    rng = np.random.default_rng(seed)
    maps = np.maximum(rng.normal(size=(h, w, c)), 0).astype(np.float32)
    maps[..., 0] = 0.0
    return maps


def decode(path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img


def assert_not_blank(img: Image.Image) -> None:
    lo, hi = img.convert("L").getextrema()
    assert hi - lo > 100, f"image looks blank: values {lo}..{hi}"


def assert_grayscale(img: Image.Image) -> None:
    if img.mode == "L":
        return
    rgb = np.asarray(img.convert("RGB")).astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def no_pyplot_figures() -> bool:
    from matplotlib._pylab_helpers import Gcf

    return Gcf.get_num_fig_managers() == 0


def test_to_uint8():
    np.testing.assert_array_equal(to_uint8(np.array([[0.0, 0.5, 1.0]])), [[0, 128, 255]])
    np.testing.assert_array_equal(to_uint8(np.array([[-1.0, 0.0, 3.0]])), [[0, 64, 255]])  # min..max scaled
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), 9.0)), np.zeros((2, 2)))
    assert to_uint8(np.zeros((0, 3))).shape == (0, 3)


def test_upscale_factor():
    assert upscale_factor((107, 215)) == 4
    assert upscale_factor((95, 95)) == 9
    assert upscale_factor((2000, 10)) == 1


def test_save_grid_writes_the_mosaic_upscaled_pixel_exact(tmp_path):
    maps = relu_maps(26, 26, 32)
    path = save_grid(maps, tmp_path / "conv2d.png")
    img = decode(path)
    assert (img.format, img.mode, img.size) == ("PNG", "L", (215 * 4, 107 * 4))
    assert_not_blank(img)
    pixels = np.asarray(img)
    np.testing.assert_array_equal(pixels[::4, ::4], to_uint8(tile(maps)))  # nearest upscaling, no smoothing
    assert (pixels[:26 * 4, :26 * 4] == 0).all()  # the dead channel 0 is flat black


def test_save_grid_second_layer_and_explicit_scale(tmp_path):
    img = decode(save_grid(relu_maps(11, 11, 64)[None], tmp_path / "c1.png", layout="NHWC"))
    assert img.size == (95 * 9, 95 * 9)
    img = decode(save_grid(relu_maps(11, 11, 64), tmp_path / "c1.png", scale=1, cols=16))
    assert img.size == (16 * 12 - 1, 4 * 12 - 1)


def test_save_grid_with_labels_renders_a_grayscale_figure(tmp_path):
    img = decode(save_grid(relu_maps(26, 26, 30), tmp_path / "labelled.png", labels=True, title="conv2d"))
    assert img.format == "PNG" and img.size[0] >= 800
    assert_grayscale(img)
    assert_not_blank(img)
    assert no_pyplot_figures()


def test_grid_figure_is_one_image_not_one_subplot_per_map():
    from matplotlib.figure import Figure

    fig = grid_figure(relu_maps(26, 26, 32), labels=True, title="conv2d 26x26x32")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 and len(fig.axes[0].images) == 1
    assert [t.get_text() for t in fig.axes[0].texts] == [str(i) for i in range(32)]
    assert no_pyplot_figures()


def test_grid_figure_without_normalisation(tmp_path):
    img = decode(save_png(grid_figure(relu_maps(5, 5, 4) * 40 - 3, normalize="none"), tmp_path / "raw.png"))
    assert_grayscale(img)
    assert_not_blank(img)


def test_comparison_figure_titles_name_layers_and_shapes(tmp_path):
    digit = (np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8)
    layers = {"conv2d": relu_maps(26, 26, 32)[None], "conv2d_1": relu_maps(11, 11, 64)[None]}
    fig = comparison_figure(digit, layers, layouts={"conv2d": "NHWC", "conv2d_1": "NHWC"}, title="digit 7",
                            prediction="predicted 7 (p = 0.998)")
    image_ax, bar, *panels = fig.axes
    assert [ax.get_title() for ax in (image_ax, *panels)] == ["input 28x28", "conv2d: 32 maps, 26x26",
                                                             "conv2d_1: 64 maps, 11x11"]
    assert [t.get_text() for t in bar.get_xticklabels()] == ["each map's min", "each map's max"]  # the scale bar
    assert fig.texts[-1].get_text() == "digit 7"
    assert [t.get_text() for t in image_ax.texts] == ["predicted 7 (p = 0.998)"]
    for ax, channels in zip(panels, (32, 64)):  # every map numbered
        assert [t.get_text() for t in ax.texts] == [str(i) for i in range(channels)]
    img = decode(save_png(fig, tmp_path / "comparison.png"))
    # Every map at least MIN_MAP_PX pixels on screen: panel width in pixels / mosaic width * map width.
    for ax, (_h, w, cols) in zip(panels, [(26, 26, 8), (11, 11, 8)]):
        panel_px = ax.get_position().width * img.size[0]
        assert panel_px / (cols * (w + 1) - 1) * w >= MIN_MAP_PX - 0.5
    # No dead space: the layers start right under the input, and fill the figure's width but for the margins.
    height_in = img.size[1] / fig.dpi
    gap_in = (image_ax.get_position().y0 - panels[0].get_position().y1) * height_in
    assert gap_in < 1.0
    assert panels[0].get_position().width >= 0.85
    assert_grayscale(img)
    assert_not_blank(img)
    assert no_pyplot_figures()


def test_comparison_of_a_large_layer_shows_its_first_maps_at_a_capped_size(tmp_path):
    layers = {"block": relu_maps(4, 4, 320)[None]}  # the 320-map layer that grew the comparison to 1011x4614 px
    fig = comparison_figure(np.zeros((96, 96, 3), np.uint8), layers, layouts={"block": "NHWC"})
    panel = fig.axes[-1]
    assert panel.get_title() == f"block: first {MAX_COMPARISON_MAPS} of 320 maps, 4x4"
    assert [t.get_text() for t in panel.texts] == [str(i) for i in range(MAX_COMPARISON_MAPS)]
    img = decode(save_png(fig, tmp_path / "comparison.png"))
    assert img.size[0] <= 1100 and img.size[1] <= 1000, img.size
    assert panel.get_position().width * img.size[0] / (8 * 5 - 1) * 4 >= MIN_MAP_PX - 0.5


def test_comparison_figure_accepts_channel_first_and_float_input():
    fig = comparison_figure(np.random.rand(28, 28, 1).astype(np.float32),
                            {"c": np.random.rand(8, 6, 6)}, layouts={"c": "CHW"}, normalize="layer")
    assert [ax.get_title() for ax in fig.axes] == ["input 28x28x1", "", "c: 8 maps, 6x6"]
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["each layer's min", "each layer's max"]


def test_maps_shape_text():
    assert maps_shape_text(np.zeros((1, 64, 11, 11)), "NCHW") == "64 maps, 11x11"


def test_save_png_is_atomic_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "grid.png"
    save_png(np.eye(8), target)
    before = target.read_bytes()

    class Exploding:
        dpi = 100

        def savefig(self, out, **kwargs):
            out.write(b"partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_png(Exploding(), target)
    assert target.read_bytes() == before  # the previous file survives a failed write
    assert os.listdir(target.parent) == ["grid.png"]


def test_save_png_rejects_non_2d_arrays(tmp_path):
    with pytest.raises(InputError, match="2D grayscale"):
        save_png(np.zeros((4, 4, 3)), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("normalize, ends", [("map", ["each map's min", "each map's max"]),
                                             ("layer", ["0", "3"]), ("none", ["0", "3"])])
def test_layer_figure_header_says_what_is_shown(normalize, ends, tmp_path):
    maps = np.minimum(relu_maps(26, 26, 32), 2.0)
    maps[0, 0, 1] = 3.0  # the layer's maximum
    fig = layer_figure(maps, "conv2d", normalize=normalize, layer_class="Conv2D", subtitle="of digit #0")
    header = [t.get_text() for t in fig.texts]
    assert header == ["conv2d (Conv2D): 32 maps, 26x26", "of digit #0",
                      f"{NORMALIZATION_TEXT[normalize]}; values in this layer 0 .. 3"]
    grid, bar = fig.axes
    assert len(grid.images) == 1  # one image, not one subplot per map
    assert [t.get_text() for t in grid.texts] == [str(i) for i in range(32)]  # channel numbers, always
    assert [t.get_text() for t in bar.get_xticklabels()] == ends
    img = decode(save_png(fig, tmp_path / "conv2d.png"))
    assert img.size[0] >= 800
    assert_grayscale(img)
    assert_not_blank(img)
    assert no_pyplot_figures()
