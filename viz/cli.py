"""`python -m viz ARTIFACTS`: draw the feature maps of one image as grayscale grid PNGs.

Writes `<layer>.png` per drawn layer and `comparison.png` (the input beside every grid)
into --out, and prints each path written. `python -m viz gallery STATS` builds the microscope
site instead (viz/gallery.py).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.errors import ArgumentParser, DataError, InputError, comma_list
from runtime.manifest import Manifest
from runtime.mnist import mnist_test_set

from .figures import comparison_figure, save_grid, save_png
from .tiling import NORMALIZATIONS, SPATIAL_LAYOUTS

COMPARISON = "comparison.png"


def select_layers(manifest: Manifest, requested: Sequence[str] | None = None) -> list[str]:
    """The outputs to draw: `requested` (checked), else every spatial output whose role is "feature_map".

    Raises:
        InputError: an unknown name, or an output that has no spatial maps (e.g. a dense layer).
    """
    available = manifest.output_names
    drawable = [o.name for o in manifest.outputs if o.layout in SPATIAL_LAYOUTS]
    if not requested:
        return [o.name for o in manifest.outputs if o.role == "feature_map" and o.name in drawable]
    names = list(dict.fromkeys(requested))  # de-duplicated, order kept
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(f"unknown layer(s) {unknown}; available: {available}")
    for name in names:
        if name not in drawable:
            raise InputError(
                f"output {name!r} has layout {manifest.output(name).layout} and no spatial feature maps to draw; "
                f"drawable: {drawable}"
            )
    return names


def write_figures(
    model,
    image: np.ndarray,
    out: str | os.PathLike,
    layers: Sequence[str] | None = None,
    cols: int | None = None,
    normalize: str = "map",
    labels: bool = False,
    title: str | None = None,
) -> list[Path]:
    """Run one image through a loaded runtime.Model and write its grids and comparison figure.

    Args:
        model: a runtime.Model (from runtime.load).
        image: one image, raw uint8 pixels or preprocessed floats ([H,W] or [H,W,C]).
        out: folder for `<layer>.png` and `comparison.png` (created if needed).
        layers: outputs to draw (default: every feature map); cols, normalize, labels: as for save_grid.
        title: title of the comparison figure.

    Returns:
        The paths written: one per layer, then comparison.png.

    Raises:
        InputError: unknown or non-spatial layers, or an image the model does not accept.
    """
    names = select_layers(model.manifest, layers)
    if not names:
        raise InputError(f"the artifacts expose no feature maps to draw; outputs: {model.output_names}")
    acts = model.run(image, outputs=names)
    layouts = {n: model.manifest.output(n).layout for n in names}
    out = Path(out)
    written = [
        save_grid(acts[n], out / f"{_file_stem(n)}.png", layout=layouts[n], cols=cols, normalize=normalize,
                  labels=labels)
        for n in names
    ]
    ordered = {n: acts[n] for n in names}  # display order is the order asked for, whatever the backend returns
    fig = comparison_figure(image, ordered, layouts=layouts, cols=cols, normalize=normalize, title=title)
    written.append(save_png(fig, out / COMPARISON))
    return written


def _file_stem(name: str) -> str:
    # Output names come from Keras layer names; keep them readable but never a path.
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "layer"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m viz", description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", help="artifacts folder written by `python -m export`")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--index", type=int, default=0,
                        help="MNIST test digit to draw (default 0): the full test set with --data, $MNIST_NPZ "
                             "or the Keras cache, else the digits shipped with featuremaps")
    source.add_argument("--image", type=Path, help="draw this image file instead (any size, colour or grayscale)")
    parser.add_argument("--data", help="path to Keras' mnist.npz")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (default figures/)")
    parser.add_argument("--layers", type=comma_list, help="comma-separated output names (default: every feature map)")
    parser.add_argument("--cols", type=_positive_int, help="grid columns (default 8 from 16 maps on, else ~sqrt)")
    parser.add_argument("--backend", default="onnx", help="runtime backend: onnx (default) or tf")
    parser.add_argument("--device", default="cpu", help="cpu (default), gpu or auto")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="map",
                        help="scale each map (default), the whole layer, or nothing")
    parser.add_argument("--invert", action="store_true", help="invert pixels (for dark digits on a light background)")
    parser.add_argument("--labels", action="store_true", help="write each map's channel index on the grids")
    return parser


def load_input(args: argparse.Namespace, model) -> tuple[np.ndarray, str]:
    """The image to draw and a title describing it, from --image or --index.

    Raises:
        DataError: an unreadable image or MNIST file. InputError: an index out of range.
    """
    if args.image is not None:
        from runtime.images import read_image

        return read_image(args.image, model.input_spec, invert=args.invert), args.image.name
    x, y, source = mnist_test_set(args.data)
    if not 0 <= args.index < len(x):
        hint = "" if len(x) >= 10000 else " (pass --data mnist.npz or set MNIST_NPZ for the full test set)"
        raise InputError(
            f"--index {args.index} is out of range for the {source}: valid indices are 0..{len(x) - 1}{hint}"
        )
    image = 255 - x[args.index] if args.invert else x[args.index]
    return image, f"MNIST test digit #{args.index} (label {int(y[args.index])})"


def _make_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the --out folder {out}: {exc.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, draw, print the files written; project errors propagate to run_cli."""
    import runtime

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gallery"]:  # `python -m viz gallery STATS`: the microscope site (viz/gallery.py)
        from .gallery import main as gallery_main

        return gallery_main(argv[1:])
    args = build_parser().parse_args(argv)
    with runtime.load(args.artifacts, backend=args.backend, device=args.device) as model:
        layers = select_layers(model.manifest, args.layers)  # before reading data: fail fast on a typo
        image, what = load_input(args, model)
        _make_folder(args.out)
        title = f"Feature maps of {what}"
        written = write_figures(model, image, args.out, layers, cols=args.cols, normalize=args.normalize,
                                labels=args.labels, title=title)
    for path in written:
        print(path)
    return 0
