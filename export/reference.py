"""The reference model: the classic MNIST CNN, and the command that reproduces it.

    python -m export.reference [--data mnist.npz] [--epochs 3] [--out models/mnist_cnn.keras]
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from runtime.errors import ArgumentParser, run_cli
from runtime.mnist import load_mnist
from runtime.quiet_tf import import_tensorflow

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
REFERENCE_MODEL = MODELS_DIR / "mnist_cnn.keras"
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


def train_reference(data: str | None = None, epochs: int = 3, out: Path = REFERENCE_MODEL, verbose: int = 1) -> dict:
    """Train the reference CNN (Adam, sparse CE, batch 64, 10% validation, seeded) and save it.

    Returns the training record, also written beside the model as JSON.
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out)
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
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m export.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="path to Keras' mnist.npz (default: $MNIST_NPZ, Keras cache, download)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REFERENCE_MODEL)
    args = parser.parse_args(argv)
    import_tensorflow()
    record = train_reference(args.data, args.epochs, args.out)
    print(f"saved {args.out}: test accuracy {record['test_accuracy']:.4f} after {args.epochs} epochs "
          f"({record['train_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
