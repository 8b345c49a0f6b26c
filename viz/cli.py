"""`python -m viz ARTIFACTS`: draw the feature maps of one image as grayscale grid PNGs.

Writes `<layer>.png` per drawn layer (a grid of numbered maps under a header naming the layer, its
shape, normalisation and value range, with a scale bar; the bare grid with --raw) and `comparison.png`
(the input, the model's prediction and a scale bar above every layer's grid) into --out, and prints
each path written.
`python -m viz gallery STATS` builds the microscope site instead (viz/gallery.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.artifacts.budgets import MAX_MEMBER_BYTES, MAX_PIXELS
from runtime.cli.args import ArgumentParser, comma_list, positive_int
from runtime.cli.process import say
from runtime.data.mnist import MNIST_SHAPE, mnist_test_set, resize_digits
from runtime.errors import BackendError, DataError, InputError

from .draw import select_layers, write_figures
from .tiling import NORMALIZATIONS


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m viz", description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", help="artifacts folder written by `python -m export`")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--index", type=int, default=0,
                        help="MNIST test digit to draw (default 0): the full test set with --data, $MNIST_NPZ "
                             "or the Keras cache, else the digits shipped with featuremaps; resized (nearest) and "
                             "repeated over channels for a model of another input shape, as the export verifies it")
    source.add_argument("--image", type=Path, help="draw this image file instead (any size, colour or grayscale)")
    parser.add_argument("--data", help="path to Keras' mnist.npz")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    parser.add_argument("--layers", type=comma_list, help="comma-separated output names (default: every feature map)")
    parser.add_argument("--cols", type=positive_int, help="grid columns (default 8 from 16 maps on, else ~sqrt)")
    parser.add_argument("--backend", default="onnx", help="runtime backend: onnx (default) or tf")
    parser.add_argument("--device", default="cpu", help="cpu (default), gpu or auto")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="map",
                        help="scale each map (default), the whole layer, or nothing")
    parser.add_argument("--invert", action="store_true", help="invert pixels (for dark digits on a light background)")
    parser.add_argument("--labels", action="store_true", help=argparse.SUPPRESS)  # the default now; old lines work
    parser.add_argument("--raw", action="store_true",
                        help="write each layer as its bare grid (no header, scale bar or channel numbers), for "
                             "post-processing")
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS,
                        help=f"decoding budget: pixels of the --image file (default: {MAX_PIXELS:,}, Pillow's)")
    return parser


def load_input(args: argparse.Namespace, model) -> tuple[np.ndarray, str]:
    """The image to draw and a title describing it, from --image or --index.

    Raises:
        DataError: an unreadable image or MNIST file. InputError: an index out of range.
    """
    if not model.input_spec.is_image:
        raise InputError(f"the model input is {model.input_spec.layout} {list(model.input_spec.shape)}, not an "
                         "image: draw it from Python, viz.write_figures(model, sample, out)")
    if args.image is not None:
        from runtime.images import read_image

        return read_image(args.image, model.input_spec, args.invert, args.max_pixels), args.image.name
    x, y, source = mnist_test_set(args.data)
    if not 0 <= args.index < len(x):
        hint = "" if len(x) >= 10000 else " (pass --data mnist.npz or set MNIST_NPZ for the full test set)"
        raise InputError(
            f"--index {args.index} is out of range for the {source}: valid indices are 0..{len(x) - 1}{hint}"
        )
    image = 255 - x[args.index] if args.invert else x[args.index]
    what = f"MNIST test digit #{args.index} (label {int(y[args.index])})"
    shape = tuple(model.input_spec.image_shape)
    if shape != MNIST_SHAPE:  # another model's input: the digit resized as the export verified it
        return resize_digits(image[None], shape)[0], f"{what} resized to {'x'.join(map(str, shape))}"
    return image, what


def _make_folder(out: Path) -> list[Path]:
    """Create --out and any missing parents; returns the folders created, innermost first."""
    created: list[Path] = []
    try:  # exists() itself fails on a name too long for the file system
        if out.exists() and not out.is_dir():
            raise DataError(f"--out {out} exists and is not a folder")
        created = [p for p in [out, *out.parents] if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise DataError(f"cannot create the --out folder {out}: {exc.strerror}") from None
    return created


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders this run created, innermost first, as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _check_drawing_installed() -> None:
    """matplotlib and Pillow, before anything is loaded or created: an [onnx]-only deployment lacks them."""
    try:
        import matplotlib  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as exc:
        raise BackendError(f"drawing needs matplotlib and Pillow, which are not importable here ({exc}); "
                           "install them with `pip install 'featuremaps[viz]'`") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, draw, print the files written; project errors propagate to run_cli."""
    from runtime.api import load

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gallery"]:  # `python -m viz gallery STATS`: the microscope site (viz/gallery.py)
        return gallery_main(argv[1:])
    args = build_parser().parse_args(argv)
    _check_drawing_installed()
    with load(args.artifacts, backend=args.backend, device=args.device) as model:
        layers = select_layers(model.manifest, args.layers)  # before reading data: fail fast on a typo
        image, what = load_input(args, model)
        created = _make_folder(args.out)
        title = f"Feature maps of {what}"
        try:
            written = write_figures(model, image, args.out, layers, cols=args.cols, normalize=args.normalize,
                                    title=title, raw=args.raw, subtitle=f"of {what}")
        except BaseException:
            _remove_empty(created)
            raise
    for path in written:
        say(path)
    return 0


def build_gallery_parser() -> argparse.ArgumentParser:
    from .gallery import __doc__ as gallery_doc

    parser = ArgumentParser(prog="python -m viz gallery", description=gallery_doc.splitlines()[0])
    parser.add_argument("stats", help="folder written by `python -m runtime stats`")
    parser.add_argument("--out", type=Path, default=Path("site"), help="site folder (default site/)")
    parser.add_argument("--force", action="store_true", help="replace a gallery already in --out")
    parser.add_argument("--max-member-bytes", type=positive_int, default=MAX_MEMBER_BYTES,
                        help=f"decoding budget: bytes per top-k .npz member (default: {MAX_MEMBER_BYTES:,})")
    return parser


def gallery_main(argv: Sequence[str] | None = None) -> int:
    """`python -m viz gallery STATS`: build the microscope site, print its index page, file count and size."""
    from .gallery import site_size, write_gallery

    args = build_gallery_parser().parse_args(argv)
    site = write_gallery(args.stats, args.out, force=args.force, max_member_bytes=args.max_member_bytes)
    files, size = site_size(site)
    say(f"{site / 'index.html'}  ({files} files, {size / 1e6:.2f} MB)")
    return 0
