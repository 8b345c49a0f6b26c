"""The reference model: the classic MNIST CNN, and the command that reproduces it.

    python -m export.reference [--data mnist.npz] [--epochs 3] [--out mnist_cnn.keras] [--force]

The shipped model lives in the package (export/data/mnist_cnn.keras, with its training record
beside it), so that `python -m export` works from a wheel too; retraining writes a new file and
never replaces an existing one without --force.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from runtime.artifacts.atomic import atomic_write
from runtime.cli.args import ArgumentParser, positive_int
from runtime.errors import DataError, UsageError
from runtime.cli.process import run_cli
from runtime.data.mnist import load_mnist
from runtime.backends.quiet_tf import import_tensorflow

REFERENCE_MODEL = Path(__file__).resolve().parent / "data" / "mnist_cnn.keras"
SEED = 1234


def build_reference_cnn():
    """Conv2D(32) > MaxPool > Conv2D(64) > MaxPool > Flatten > Dense(64) > Dense(10, softmax)."""
    import keras
    from keras import layers

    # Explicit names keep the exported output names stable whatever was built before.
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name="image"),
            layers.Conv2D(32, (3, 3), activation="relu", name="conv2d"),
            layers.MaxPooling2D((2, 2), name="max_pooling2d"),
            layers.Conv2D(64, (3, 3), activation="relu", name="conv2d_1"),
            layers.MaxPooling2D((2, 2), name="max_pooling2d_1"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense"),
            layers.Dense(10, activation="softmax", name="dense_1"),
        ],
        name="mnist_cnn",
    )


def record_path(model: Path) -> Path:
    """The training record written beside a model: mnist_cnn.keras -> mnist_cnn.json."""
    return Path(model).with_suffix(".json")


def train_reference(data: str | None = None, epochs: int = 3, out: Path = Path("mnist_cnn.keras"),
                    verbose: int | str = "auto") -> dict:
    """Train the reference CNN (Adam, sparse CE, batch 64, 10% validation, seeded) and save it.

    Args:
        verbose: Keras' fit verbosity ("auto": a progress bar, 2: one line per epoch).

    Returns the training record, also written beside the model as JSON (both replaced atomically).
    """
    import keras

    mnist = load_mnist(data)
    keras.utils.set_random_seed(SEED)
    x_train = mnist["x_train"][..., None].astype("float32") / 255.0
    x_test = mnist["x_test"][..., None].astype("float32") / 255.0
    model = build_reference_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(
        x_train, mnist["y_train"], epochs=epochs, batch_size=64, validation_split=0.1, verbose=verbose
    )
    seconds = time.perf_counter() - start
    test_loss, test_acc = model.evaluate(x_test, mnist["y_test"], verbose=0)
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")  # Keras picks the format from the suffix
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save(tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise DataError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # after a failure or Ctrl-C: nothing half-written
    record = {
        "model": out.name,
        "epochs": epochs,
        "batch_size": 64,
        "validation_split": 0.1,
        "seed": SEED,
        "train_seconds": round(seconds, 1),
        "test_accuracy": round(float(test_acc), 4),
        "test_loss": round(float(test_loss), 4),
        "val_accuracy": [round(float(a), 4) for a in history.history["val_accuracy"]],
        "keras_version": keras.__version__,
    }
    with atomic_write(record_path(out), "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
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
    args = parser.parse_args(argv)
    check_out(args.out, args.force)
    import_tensorflow()
    # A progress bar on a terminal; one line per epoch in logs (no escape codes).
    record = train_reference(args.data, args.epochs, args.out, verbose="auto" if sys.stdout.isatty() else 2)
    print(f"saved {args.out} and {record_path(args.out).name}: test accuracy {record['test_accuracy']:.4f} "
          f"after {args.epochs} epochs ({record['train_seconds']} s)")
    return 0


def check_out(out: Path, force: bool) -> None:
    """Refuse a model path Keras cannot write, or existing files without force (before any training).

    Raises:
        UsageError: a suffix other than .keras / .h5, or an existing model or record without force.
    """
    if out.suffix not in (".keras", ".h5"):
        raise UsageError(f"--out {out} must end in .keras or .h5 (the formats Keras saves)")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; expected a model file name such as mnist_cnn.keras")
    existing = [str(p) for p in (out, record_path(out)) if p.exists()]
    if existing and not force:
        shipped = " (the model shipped with featuremaps)" if out.resolve() == REFERENCE_MODEL else ""
        raise UsageError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}{shipped}; "
                         "pass --force to replace, or choose another --out")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
