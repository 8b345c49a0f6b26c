"""Path confinement: the one place that turns untrusted names into paths.

Every name that comes from a manifest, an ONNX graph or a user-supplied output name, and
every path read or written inside an artifacts or output folder, goes through here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from runtime.errors import ArtifactError

# A name that is safe as a file name, an npz/zarr member, a TF signature key and an ONNX name.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_MAX_PATH = 1024


def safe_name(name: object, what: str = "output name") -> str:
    """Return name if it can be used as a single file name component, else raise ArtifactError."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name.endswith("."):
        raise ArtifactError(
            f"{what} {_shown(name)} is not allowed: expected 1-128 characters of letters, digits, '_', '.', '-', "
            "starting with a letter, digit or '_'")
    return name


def relative_path(rel: object, what: str = "path") -> str:
    """Return rel if it is a relative POSIX path that cannot leave its folder by its text alone.

    Needs no folder and touches no file: untrusted paths are refused before anything is stat'ed.

    Raises:
        ArtifactError: not a string, empty, absolute, with '..', a backslash, a NUL or a control character.
    """
    if (not isinstance(rel, str) or not rel or len(rel) > _MAX_PATH
            or any(ord(ch) < 32 or ch == "\\" for ch in rel)):
        raise ArtifactError(f"{what} {_shown(rel)} is not a relative path inside the folder "
                            f"(expected up to {_MAX_PATH} characters, '/' as separator)")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or ".." in parts or not parts:
        raise ArtifactError(f"{what} {_shown(rel)} leaves the folder: expected a relative path inside it")
    return rel


def confine(root: str | os.PathLike, rel: object, what: str = "path") -> Path:
    """root/rel, refusing absolute paths, '..' and symbolic links that lead outside root.

    The text of rel is checked first (relative_path), so nothing outside root is ever stat'ed
    except the targets of symbolic links inside root, which are refused alike whether or not
    they exist.

    Raises:
        ArtifactError: rel is not a relative path that stays inside root.
    """
    parts = PurePosixPath(relative_path(rel, what)).parts
    base = Path(root).resolve()
    path = base.joinpath(*parts)
    real = path.resolve()
    if real != base and base not in real.parents:
        raise ArtifactError(f"{what} {_shown(rel)} leads outside the folder (through a symbolic link)")
    return path


def _shown(value: object) -> str:
    """repr of an untrusted value, cut short: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
