"""Image files -> raw pixels shaped as the model input declares (Pillow, imported lazily).

Conversion rules:
- Any format Pillow reads; the first frame of animations; EXIF orientation applied.
- Any size: resized to the manifest's H x W (Lanczos). The aspect ratio is not kept:
  a non-square image is stretched, as most MNIST-style preprocessing does.
- Any mode: converted to 1 channel (grayscale, "L") or 3 (RGB), as the model's C says.
  16-bit and float grayscale are scaled to 0..255 rather than clipped.
- Transparent pixels are background: black (MNIST digits are light on dark), or white
  when `invert` is set, so that they are black after the inversion too.
- Grayscale models are taken to expect light strokes on a dark background (the MNIST
  convention): a grayscale image whose border is bright (looks_inverted) gets one
  InvertedImageWarning per process, naming `invert=True`, unless `invert` is set.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from runtime.artifacts.budgets import MAX_PIXELS, over
from runtime.artifacts.manifest import InputSpec
from runtime.errors import DataError, FeatureMapsWarning, InputError

FORMATS_HINT = "PNG, JPEG, BMP, GIF, TIFF, WebP or any other format Pillow reads"
_MODES = {1: "L", 3: "RGB"}
BRIGHT_BORDER = 128  # mean border pixel from which the background counts as light
_warned = False  # one warning per process: a folder of scanned pages would repeat it for every file


class InvertedImageWarning(FeatureMapsWarning):
    """An image looks dark-on-light while the model expects light strokes on a dark background."""


def looks_inverted(pixels: np.ndarray) -> bool:
    """Whether uint8 pixels [H, W(, C)] have a light background: the mean of their outer ring
    (an eighth of the size, at least one pixel) is at least BRIGHT_BORDER."""
    x = np.asarray(pixels, dtype=np.float32)
    x = x.mean(axis=-1) if x.ndim == 3 else x
    h, w = x.shape
    r = max(1, min(h, w) // 8)
    inner = x[r:h - r, r:w - r]
    border_sum = float(x.sum()) - float(inner.sum())
    border_count = x.size - inner.size
    return border_count > 0 and border_sum / border_count >= BRIGHT_BORDER


def warn_if_inverted(pixels: np.ndarray, spec: InputSpec, source: str = "the image") -> bool:
    """Warn (once per process) when a grayscale model gets an image that looks dark-on-light.

    Returns whether the image looks inverted.
    """
    global _warned
    if spec.image_shape[-1] != 1 or not looks_inverted(pixels):
        return False
    if not _warned:
        _warned = True
        warnings.warn(InvertedImageWarning(
            f"{source} looks like dark strokes on a light background (its border is bright), but the model "
            "expects light strokes on a dark background, as in MNIST: pass `invert=True` if so; "
            "this is said once"), stacklevel=3)
    return True


def read_image(path: str | os.PathLike, spec: InputSpec, invert: bool = False,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 pixels [H, W, C] matching `spec` (ready for runtime.preprocess.to_batch).

    Args:
        path: the image file.
        spec: the model's input spec; its image_shape gives H, W and C.
        invert: 255 - pixels, for dark-on-light images (the model expects light on dark).
        max_pixels: the largest width x height decoded; a larger image is refused from its header alone.

    Raises:
        DataError: the file is missing or not a readable image, over `max_pixels`, or Pillow is not installed.
        InputError: the model's input has a channel count other than 1 or 3.
    """
    if not spec.is_image:
        raise InputError(f"model input is {spec.layout} {list(spec.shape)}, not an image: image files do not apply; "
                         "pass arrays (.npy, .npz, Zarr)")
    h, w, c = spec.image_shape
    if c not in _MODES:
        raise InputError(f"model input has {c} channels; image files convert to 1 (grayscale) or 3 (RGB) only")
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise DataError("reading image files needs Pillow: pip install 'featuremaps[viz]'") from None
    if max_pixels > (Image.MAX_IMAGE_PIXELS or max_pixels):  # Pillow refuses twice its own limit: ours decides
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with Image.open(path) as img:  # reads the header only
            if img.width * img.height > max_pixels:
                raise DataError(over(f"image {str(path)!r} ({img.width}x{img.height})", img.width * img.height,
                                     "max_pixels", max_pixels, "pixels"))
            img = ImageOps.exif_transpose(img)
            img.load()
            img = _to_mode(img, _MODES[c], background=255 if invert else 0)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, twice its default: ours is first normally
        raise DataError(f"image {str(path)!r} is over Pillow's own limit ({exc}); over the budget `max_pixels` "
                        f"of {max_pixels:,} pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        # OSError covers missing files, directories, unknown formats and truncated data.
        if isinstance(exc, Image.UnidentifiedImageError):
            reason = "not an image format Pillow recognises"
        elif isinstance(exc, OSError) and exc.strerror:
            reason = exc.strerror  # e.g. "No such file or directory", without repeating the path
        else:
            reason = str(exc).split("\n")[0]
        raise DataError(f"cannot read image {str(path)!r}: {reason}; expected {FORMATS_HINT}") from None
    size = (w or img.width, h or img.height)  # a free dimension (None) keeps the image's own size
    if img.size != size:
        img = img.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(img, dtype=np.uint8).reshape(size[1], size[0], c)
    if invert:
        return 255 - pixels
    warn_if_inverted(pixels, spec, f"image {str(path)!r}")
    return pixels.copy()


def _to_mode(img, mode: str, background: int):
    """Convert a Pillow image to "L" or "RGB", flattening transparency onto `background`."""
    from PIL import Image

    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _wide_gray_to_l(img)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (background, background, background, 255))
        img = Image.alpha_composite(base, rgba)
    return img.convert(mode)


def _wide_gray_to_l(img):
    """16-bit, 32-bit or float grayscale -> 8-bit "L", scaled (Pillow's own convert clips at 255)."""
    from PIL import Image

    x = np.asarray(img, dtype=np.float64)
    top = float(x.max()) if x.size else 0.0
    if img.mode == "F" and top <= 1.0:
        x = x * 255.0  # floats in 0..1
    elif top > 255.0:
        x = x / 257.0  # 16-bit range 0..65535 -> 0..255
    return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


__all__ = ["read_image", "looks_inverted", "warn_if_inverted", "InvertedImageWarning", "FORMATS_HINT"]
