"""Reading the user's trained Keras model, safely."""
from __future__ import annotations

import zipfile
from pathlib import Path

from runtime.errors import ExportError

SUFFIXES = (".keras", ".h5", ".hdf5")


def load_keras_model(path: str | Path, allow_unsafe: bool = False):
    """Load a trained Keras model without compiling it (it is never retrained).

    Raises:
        ExportError: missing or unreadable file, or a model that needs unsafe
            deserialization (Lambda layers, unknown custom objects).
    """
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
                f"{path.name} uses custom objects that Keras does not know ({_first_line(exc)}); custom code "
                "is not loaded by this tool: rebuild the model from built-in layers, or register the class "
                "with keras.saving.register_keras_serializable and export from Python"
            ) from None
        raise _unreadable(path, exc) from None
    except (OSError, zipfile.BadZipFile, KeyError, AttributeError, EOFError) as exc:
        raise _unreadable(path, exc) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _unreadable(path: Path, exc: BaseException) -> ExportError:
    return ExportError(f"cannot read {path} as a Keras model (corrupt or not a Keras file): {_first_line(exc)}")
