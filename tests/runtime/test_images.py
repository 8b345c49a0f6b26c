"""runtime.images.read_image: any file Pillow reads -> uint8 pixels shaped as the manifest declares."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime.artifacts.manifest import InputSpec, Preprocessing
from runtime.data.mnist import shipped_digits
from runtime.errors import DataError, InputError
from runtime.images import read_image
from runtime.preprocess import to_batch


def spec(h: int = 28, w: int = 28, c: int = 1) -> InputSpec:
    return InputSpec("image", "float32", (None, h, w, c), "NHWC", Preprocessing())


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return shipped_digits()[0][0]


def test_mnist_sized_grayscale_png_round_trips_exactly(tmp_path, digit):
    Image.fromarray(digit).save(tmp_path / "d.png")
    pixels = read_image(tmp_path / "d.png", spec())
    assert pixels.dtype == np.uint8 and pixels.shape == (28, 28, 1)
    np.testing.assert_array_equal(pixels[..., 0], digit)
    assert to_batch(pixels, spec()).shape == (1, 28, 28, 1)


def test_large_colour_image_is_resized_and_made_gray(tmp_path, digit):
    big = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.NEAREST))
    rgb = np.stack([big, big // 2, np.zeros_like(big)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=95)
    pixels = read_image(tmp_path / "big.jpg", spec())
    assert pixels.shape == (28, 28, 1)
    gray_digit = (digit * 0.299 + digit / 2 * 0.587).astype(np.uint8)  # Pillow's L = ITU-R 601-2 luma
    assert np.abs(pixels[..., 0].astype(int) - gray_digit).mean() < 8


@pytest.mark.filterwarnings("ignore::runtime.images.InvertedImageWarning")  # a flat bright image, on purpose
def test_non_square_image_is_stretched_to_the_input_size(tmp_path):
    Image.new("L", (90, 30), 200).save(tmp_path / "wide.png")
    pixels = read_image(tmp_path / "wide.png", spec(16, 20, 1))
    assert pixels.shape == (16, 20, 1) and (pixels == 200).all()


def test_three_channel_model_gets_rgb(tmp_path):
    Image.new("L", (10, 10), 77).save(tmp_path / "g.png")
    pixels = read_image(tmp_path / "g.png", spec(8, 8, 3))
    assert pixels.shape == (8, 8, 3) and (pixels == 77).all()


def test_invert_for_dark_on_light_images(tmp_path, digit):
    Image.fromarray(255 - digit).save(tmp_path / "paper.png")
    np.testing.assert_array_equal(read_image(tmp_path / "paper.png", spec(), invert=True)[..., 0], digit)


@pytest.mark.parametrize("invert", [False, True])
def test_transparent_pixels_become_model_background(tmp_path, invert):
    rgba = np.zeros((28, 28, 4), np.uint8)
    ink = 0 if invert else 255  # dark ink on a page (inverted) or light ink
    rgba[10:18, 12:16] = (ink, ink, ink, 255)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    pixels = read_image(tmp_path / "t.png", spec(), invert=invert)[..., 0]
    assert (pixels[10:18, 12:16] == 255).all()
    pixels[10:18, 12:16] = 0
    assert (pixels == 0).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 32896, 65535, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "16.png", spec(4, 4, 1))[0, :, 0], [0, 128, 255, 255])


def test_palette_gif_first_frame(tmp_path, digit):
    Image.fromarray(digit).convert("P").save(tmp_path / "d.gif")
    np.testing.assert_array_equal(read_image(tmp_path / "d.gif", spec())[..., 0], digit)


@pytest.mark.parametrize("make", ["missing", "text", "truncated", "directory", "empty"])
def test_unreadable_files_raise_one_line_data_error_naming_path_and_formats(tmp_path, digit, make):
    path = tmp_path / f"{make}.png"
    if make == "text":
        path.write_text("not an image\n")
    elif make == "truncated":
        Image.fromarray(digit).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif make == "directory":
        path.mkdir()
    elif make == "empty":
        path.write_bytes(b"")
    with pytest.raises(DataError) as info:
        read_image(path, spec())
    message = str(info.value)
    assert str(path) in message and "PNG, JPEG" in message and "\n" not in message


def test_unsupported_channel_count_is_an_input_error(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "g.png")
    with pytest.raises(InputError, match="2 channels"):
        read_image(tmp_path / "g.png", spec(4, 4, 2))


# --- dark-on-light detection ------------------------------------------------------------------------

@pytest.fixture
def fresh_warning(monkeypatch):
    """The once-per-process inversion warning, not yet given."""
    import runtime.images

    monkeypatch.setattr(runtime.images, "_warned", False)


def test_every_shipped_digit_is_told_apart_from_its_inverse():
    from runtime.images import looks_inverted

    x, _ = shipped_digits()
    assert not any(looks_inverted(d) for d in x)
    assert all(looks_inverted(255 - d) for d in x)
    assert looks_inverted(np.full((5, 5, 3), 200, np.uint8)) and not looks_inverted(np.zeros((1, 1), np.uint8))


def test_dark_on_light_file_warns_once_naming_invert(tmp_path, digit, fresh_warning):
    from runtime.images import InvertedImageWarning

    Image.fromarray(255 - digit).save(tmp_path / "paper.png")
    with pytest.warns(InvertedImageWarning, match=r"paper.png' looks like dark strokes .* pass `invert=True`"):
        read_image(tmp_path / "paper.png", spec())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        read_image(tmp_path / "paper.png", spec())
        read_image(tmp_path / "paper.png", spec(), invert=True)


def test_no_warning_for_light_on_dark_inverted_or_colour_models(tmp_path, digit, fresh_warning):
    import warnings

    Image.fromarray(digit).save(tmp_path / "d.png")
    Image.fromarray(255 - digit).save(tmp_path / "paper.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(tmp_path / "d.png", spec())
        read_image(tmp_path / "paper.png", spec(), invert=True)
        read_image(tmp_path / "paper.png", spec(8, 8, 3))  # a colour model's expectations are not known
