"""Path confinement: the one place that turns untrusted names into paths.

Every name that comes from a manifest, an ONNX graph or a user-supplied output name, and
every path read or written inside an artifacts or output folder, goes through here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ArtifactError

# A name that is safe as a file name, an npz/zarr member, a TF signature key and an ONNX name.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


def safe_name(name: object, what: str = "output name") -> str:
    """Return name if it can be used as a single file name component, else raise ArtifactError."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or name.endswith("."):
        raise ArtifactError(
            f"{what} {name!r} is not allowed: expected 1-128 characters of letters, digits, '_', '.', '-', "
            "starting with a letter, digit or '_'")
    return name


def confine(root: str | os.PathLike, rel: object, what: str = "path") -> Path:
    """root/rel, refusing absolute paths, '..' and symlinks that lead outside root.

    Raises:
        ArtifactError: rel is not a relative path that stays inside root.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise ArtifactError(f"{what} {rel!r} is not a relative path inside the folder")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or rel.startswith(("/", "\\")):
        raise ArtifactError(f"{what} {rel!r} leaves the folder: expected a relative path inside it")
    base = Path(root).resolve()
    path = base.joinpath(*parts)
    real = path.resolve()
    if real != base and base not in real.parents:
        raise ArtifactError(f"{what} {rel!r} leads outside the folder (through a symbolic link)")
    return path
