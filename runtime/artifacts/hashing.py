"""sha256 of files and of artifact trees, and reading artifact files so that what is hashed is what is loaded."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from runtime.artifacts.paths import confine, open_inside
from runtime.errors import ArtifactError

MANIFEST = "manifest.json"
_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # the standard library's chunked loop (3.11+)


def tree_files(root: Path) -> dict[str, dict]:
    """Every file under root except the manifest: relative POSIX path -> {sha256, bytes}."""
    files = {}
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return files


def file_state(folder: Path, rel: str, meta: dict) -> str:
    """"ok", "missing" or "wrong" (size or sha256 differ) for one listed artifact file.

    The path is confined first (ArtifactError for one leading outside), and the size is compared
    before anything is hashed, so a huge substitute costs nothing.
    """
    try:
        f = _open_listed(folder, rel, meta)
    except FileNotFoundError:
        return "missing"
    except (_Wrong, IsADirectoryError):
        return "wrong"
    except OSError as exc:
        raise _unreadable(rel, exc) from None
    with f:
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return "ok" if digest.hexdigest() == meta["sha256"] else "wrong"


def read_verified(folder: Path, rel: str, meta: dict) -> bytes:
    """The bytes of a listed artifact file, read once and checked against its sha256: load these, not the path.

    Raises:
        ArtifactError: the file leads outside folder, is missing, or differs from the manifest.
    """
    with _open_checked(folder, rel, meta) as f:
        data = f.read(meta["bytes"] + 1)
    _compare(rel, hashlib.sha256(data).hexdigest(), meta)
    return data


def copy_verified(folder: Path, rel: str, meta: dict, dest: Path) -> None:
    """Copy a listed artifact file to dest, hashing the bytes copied; dest is removed unless they match.

    Raises:
        ArtifactError: as read_verified.
    """
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _open_checked(folder, rel, meta) as src, open(dest, "xb") as out:
        for block in iter(lambda: src.read(_BLOCK), b""):
            digest.update(block)
            out.write(block)
    try:
        _compare(rel, digest.hexdigest(), meta)
    except ArtifactError:
        dest.unlink()
        raise


class _Wrong(Exception):
    """A listed file of another size or kind than the manifest records."""


def _open_listed(folder: Path, rel: str, meta: dict) -> BinaryIO:
    """Open a listed file for reading, confined to folder; _Wrong if it is not a regular file of the listed size."""
    confine(folder, rel, "artifact file")  # the error for a link leading outside says so
    # Opened relative to the folder's descriptors with O_NOFOLLOW at every step: a symbolic link swapped
    # in after confine() is refused, not followed; O_NONBLOCK: a FIFO planted in the folder cannot hang it.
    fd = open_inside(folder, rel, "artifact file")
    f = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != meta["bytes"]:
        f.close()
        raise _Wrong(rel)
    return f


def _open_checked(folder: Path, rel: str, meta: dict) -> BinaryIO:
    try:
        return _open_listed(folder, rel, meta)
    except FileNotFoundError:
        raise file_error("missing", folder, rel) from None
    except (_Wrong, IsADirectoryError):
        raise file_error("wrong", folder, rel) from None
    except OSError as exc:
        raise _unreadable(rel, exc) from None


def _unreadable(rel: str, exc: OSError) -> ArtifactError:
    return ArtifactError(f"cannot read artifact file {rel!r}: {exc.strerror or exc} "
                         "(a symbolic link, or no permission)")


def _compare(rel: str, sha256: str, meta: dict) -> None:
    if sha256 != meta["sha256"]:
        raise file_error("wrong", Path(), rel)


def file_error(state: str, folder: Path, rel: str) -> ArtifactError:
    """The error for a listed file found "missing" or "wrong" (see file_state)."""
    if state == "missing":
        return ArtifactError(f"artifact file {rel!r} listed in the manifest is missing from {str(folder)!r}")
    return ArtifactError(
        f"artifact file {rel!r} does not match the manifest's sha256 (tampered or truncated); re-export it")


__all__ = ["MANIFEST", "sha256_file", "tree_files", "file_state", "file_error", "read_verified", "copy_verified"]
