"""Reading the user's trained Keras model, safely."""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Sequence

from runtime.errors import ExportError

SUFFIXES = (".keras", ".h5", ".hdf5")


def import_user_code(imports: Sequence[str] = ()) -> None:
    """Import the user's code that registers custom layers and models (keras.saving.register_keras_serializable):
    each entry a Python file (`my_layers.py`) or an importable module name (`mypackage.layers`).

    It runs as any import does: only code the user names. Safe mode still refuses Lambda layers.

    Raises:
        ExportError: a file or module that is missing or fails while importing (the cause in full).
    """
    import importlib
    import importlib.util

    for entry in imports:
        path = Path(entry)
        try:
            if entry.endswith(".py") or path.is_file():
                if not path.is_file():
                    raise ExportError(f"`imports` file {entry} not found")
                spec = importlib.util.spec_from_file_location(f"featuremaps_user_{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(entry)
        except ExportError:
            raise
        except Exception as exc:  # the user's code may raise anything while importing  # noqa: BLE001
            raise ExportError(f"`imports` {entry} failed to import: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}") from None


def load_keras_model(path: str | Path, allow_unsafe: bool = False, imports: Sequence[str] = ()):
    """Load a trained Keras model without compiling it (it is never retrained), after importing the user's code
    that registers its custom objects (import_user_code).

    Raises:
        ExportError: missing or unreadable file, or a model that needs unsafe
            deserialization (Lambda layers, unknown custom objects).
    """
    import_user_code(imports)
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"model file not found: {path} (expected a trained Keras model: {', '.join(SUFFIXES)})")
    if path.suffix.lower() not in SUFFIXES:
        raise ExportError(f"unsupported model file {path.name!r}; expected one of {', '.join(SUFFIXES)}")
    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except ValueError as exc:
        if "safe_mode" in str(exc):
            raise ExportError(
                f"{path.name} holds a Lambda layer whose Python code would run on load (unsafe "
                "deserialization), so it is refused; if you trust the file, pass `allow_unsafe=True`"
            ) from None
        raise _unreadable(path, exc) from None
    except TypeError as exc:
        if "custom" in str(exc).lower() or "locate" in str(exc).lower():
            raise ExportError(
                f"{path.name} uses custom objects that Keras does not know ({_first_line(exc)}); pass `imports` "
                "with the Python file or module that defines them, registered with "
                "keras.saving.register_keras_serializable"
            ) from None
        raise _unreadable(path, exc) from None
    except (OSError, zipfile.BadZipFile, KeyError, AttributeError, EOFError) as exc:
        raise _unreadable(path, exc) from None


def _first_line(exc: BaseException) -> str:
    """The cause in full, on one line: never cut (the class Keras could not locate comes late in its message)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _unreadable(path: Path, exc: BaseException) -> ExportError:
    return ExportError(f"cannot read {path} as a Keras model (corrupt or not a Keras file): {_first_line(exc)}")
