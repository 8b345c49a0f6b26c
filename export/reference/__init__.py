"""The reference model: the classic MNIST CNN, how it is trained, and where the shipped one lives.

The shipped model lives in the package (export/data/mnist_cnn.keras, with its training record
beside it), so that `python -m export` works from a wheel too. `python -m export.reference`
(export/cli.py) retrains it: a new file, never replacing an existing one unless forced (check_out).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from runtime.artifacts.atomic import atomic_write
from runtime.data.mnist import load_mnist
from runtime.errors import DataError, UsageError

REFERENCE_MODEL = Path(__file__).resolve().parents[1] / "data" / "mnist_cnn.keras"
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


def check_out(out: str | os.PathLike, force: bool = False) -> None:
    """Refuse a model path Keras cannot write, or existing files without force (before any training).

    Raises:
        UsageError: a suffix other than .keras / .h5, or an existing model or record without force.
    """
    out = Path(out)
    if out.suffix not in (".keras", ".h5"):
        raise UsageError(f"`out` {out} must end in .keras or .h5 (the formats Keras saves)")
    if out.is_dir():
        raise UsageError(f"`out` {out} is a folder; expected a model file name such as mnist_cnn.keras")
    existing = [str(p) for p in (out, record_path(out)) if p.exists()]
    if existing and not force:
        shipped = " (the model shipped with featuremaps)" if out.resolve() == REFERENCE_MODEL else ""
        raise UsageError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}{shipped}; "
                         "pass `force=True` to replace, or choose another `out`")

