"""`python -m export`: a trained Keras model -> verified SavedModel + ONNX + manifest; and
`python -m export.reference`: retrain the shipped reference CNN (see export.reference)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from runtime.artifacts.manifest import Manifest, Preprocessing
from runtime.backends.quiet_tf import import_tensorflow
from runtime.cli.args import ArgumentParser, comma_list, non_negative_float, positive_int
from runtime.cli.process import as_flags, say
from runtime.compare import Tolerance

from .artifacts import DEFAULT_OPSET
from .graph import CONV_CLASS_NAMES
from .reference import REFERENCE_MODEL, SEED, check_out, record_path

STARTED = time.perf_counter()  # imported at process start, before TensorFlow: the wall time users wait


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m export", description="Export a trained Keras model as verified SavedModel + "
                       "ONNX artifacts exposing its feature maps as named outputs.")
    p.add_argument("--model", type=Path, default=REFERENCE_MODEL,
                   help="trained Keras model (.keras, .h5); default: the shipped reference MNIST CNN")
    p.add_argument("--out", type=Path, default=Path("artifacts"),
                   help="artifacts folder to create (default: artifacts)")
    p.add_argument("--layers", type=comma_list,
                   help=f"comma-separated layer paths or names to expose (default: every {', '.join(CONV_CLASS_NAMES)} "
                        "at any depth; --list-layers marks them)")
    p.add_argument("--data", help="Keras mnist.npz to verify MNIST-shaped models on "
                                  "(default: $MNIST_NPZ, then the Keras cache)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--allow-unsafe", action="store_true",
                   help="load models with Lambda layers (runs code stored in the file: trusted files only)")
    p.add_argument("--atol", type=non_negative_float, default=Tolerance.atol,
                   help=f"verification: error allowed as a fraction of each output's largest magnitude "
                        f"(default {Tolerance.atol:g})")
    p.add_argument("--rtol", type=non_negative_float, default=Tolerance.rtol,
                   help=f"verification: further error allowed as a fraction of each channel's largest magnitude "
                        f"(default {Tolerance.rtol:g}; see runtime/compare.py)")
    p.add_argument("--noise", type=non_negative_float, default=Tolerance.noise,
                   help=f"verification: where an output misses atol/rtol, also accept errors up to this many times "
                        f"its own float32 noise floor, measured on inputs one ulp away (default {Tolerance.noise:g}; "
                        "0: never)")
    p.add_argument("--scale", type=float, help="input = pixel * scale + offset (default: what the model expects: "
                   "1 when it rescales its own input with Rescaling/Normalization, else 1/255)")
    p.add_argument("--offset", type=float, help="see --scale (default 0)")
    p.add_argument("--labels", type=comma_list, help="comma-separated class labels (default 0..N-1)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE_OR_MODULE",
                   help="Python file or module that registers the model's custom layers/models (repeatable); "
                        "imported before loading, safe mode stays on")
    p.add_argument("--input-shape", type=_input_shape, metavar="D1,D2,...",
                   help="fix the input's size, without the batch (e.g. 256,256,3); default: the model's own, whose "
                        "free dimensions (None) stay free in the artifacts")
    p.add_argument("--list-layers", action="store_true",
                   help="print the model's layers (nested ones indented) by path, with class and output shape, '*' "
                        "marking those exposed by default, and export nothing")
    return p.parse_args(argv)


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes such as 256,256,3; got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes such as 256,256,3; got {text!r}")
    return shape


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import_tensorflow()  # now, quietly: keras and the exporter import it next
    from .pipeline import ExportOptions, export_model
    from .progress import Progress

    if args.list_layers:
        from .graph import list_layers

        tree = list_layers(args.model, args.allow_unsafe, args.imports).splitlines()
        say("\n".join(tree[:-1] + [as_flags(tree[-1])]))  # the footer names `layers`: shown as --layers
        return 0
    given = None
    if args.scale is not None or args.offset is not None:
        given = Preprocessing(scale=Preprocessing.scale if args.scale is None else args.scale,
                              offset=args.offset or 0.0)
    options = ExportOptions(
        layers=args.layers, data=args.data, opset=args.opset, force=args.force, allow_unsafe=args.allow_unsafe,
        tolerance=Tolerance(args.atol, args.rtol, args.noise), preprocessing=given, labels=args.labels,
        input_shape=args.input_shape, imports=tuple(args.imports),
    )
    manifest = export_model(args.model, args.out, options, Progress(sys.stderr))
    say(summary(manifest, args.out, time.perf_counter() - STARTED))
    return 0


def summary(manifest: Manifest, out: Path, seconds: float) -> str:
    """A short human summary: outputs, verification, files; seconds is the process' wall time so far."""
    v = manifest.verification
    lines = [f"exported {manifest.source_model['file']} -> {out}/ in {seconds:.1f} s"]
    pre = manifest.input.preprocessing
    inp = manifest.input
    free = f", free {inp.free_axes} (verified at {v['sizes']})" if inp.free_axes else ""
    raw = (f"uint8 pixels * {pre.scale:.6g} + {pre.offset:g}" if pre.raw_dtype == "uint8" and inp.dtype == "float32"
           else f"{pre.raw_dtype} values as given")
    lines.append(f"  input  {inp.name}: {inp.dtype} {list(inp.shape)} {inp.layout}{free} = {raw}"
                 + (f" ({as_flags(pre.reason)})" if pre.reason else ""))
    for o in manifest.outputs:
        errors = v["outputs"][o.name]
        worst = max(e["max_abs"] for e in errors.values())
        lines.append(f"  output {o.name:<12} {o.layer_class:<14} {str(list(o.shape)):<20} max abs err {worst:.2e}")
    noisy = v.get("within_noise_only")
    lines.append(f"  verified on {v['images']} images ({v['source']}): "
                 + ("all outputs agree" if v["passed"] else "FAILED")
                 + f" within atol {v['tolerance']['atol']:g}, rtol {v['tolerance']['rtol']:g}"
                 + (f", {v['tolerance']['noise']:g}x noise floor" if noisy else ""))
    if noisy:
        lines.append(f"  note: {len(noisy)} output(s) agree only within {v['tolerance']['noise']:g}x their own "
                     f"{v.get('noise_dtype', 'float32')} "
                     "noise floor (the model itself moves that much when its input moves one ulp: chaotic weights): "
                     + _names(noisy))
    if "accuracy" in v:
        lines.append(f"  accuracy on {v.get('accuracy_images', v['images'])} labelled images: "
                     + ", ".join(f"{k} {a:.4f}" for k, a in v["accuracy"].items()))
    else:
        lines.append("  accuracy not scored: no labels known to apply to this model (pass --data with labels)")
    size = sum(f["bytes"] for f in manifest.files.values())
    lines.append(f"  files: manifest.json, model.onnx, saved_model/ ({size / 1e6:.2f} MB), "
                 f"opset {manifest.onnx['opset']}")
    if manifest.preview:
        lines.append(f"  preview: {out / manifest.preview['file']} ({manifest.preview['output']} maps of "
                     f"{manifest.preview['image']})")
    return "\n".join(lines)


def _names(names: list[str], shown: int = 8) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def parse_reference_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m export.reference",
                            description="Retrain the reference MNIST CNN as shipped (Adam, sparse CE, batch 64, "
                                        "10%% validation, seed %d) and save it with its training record." % SEED)
    parser.add_argument("--data", help="path to Keras' mnist.npz (default: $MNIST_NPZ, the Keras cache, "
                                       "else the Keras download)")
    parser.add_argument("--epochs", type=positive_int, default=3, help="training epochs (default 3, as shipped)")
    parser.add_argument("--out", type=Path, default=Path("mnist_cnn.keras"),
                        help="model file to write (.keras or .h5; default: mnist_cnn.keras here); its training "
                             "record goes beside it as .json")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file and its record")
    return parser.parse_args(argv)


def reference_main(argv: Sequence[str] | None = None) -> int:
    """`python -m export.reference`: check --out, retrain, print what was saved and its test accuracy."""
    args = parse_reference_args(argv)
    check_out(args.out, args.force)  # before TensorFlow loads: cheap mistakes first
    import_tensorflow()
    from .reference import train_reference

    # A progress bar on a terminal; one line per epoch in logs (no escape codes).
    record = train_reference(args.data, args.epochs, args.out, verbose="auto" if sys.stdout.isatty() else 2)
    say(f"saved {args.out} and {record_path(args.out).name}: test accuracy {record['test_accuracy']:.4f} "
          f"after {args.epochs} epochs ({record['train_seconds']} s)")
    return 0
