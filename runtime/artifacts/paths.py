"""Path confinement: the one place that turns untrusted names into paths.

Every name that comes from a manifest, an ONNX graph or a user-supplied output name, and
every path read or written inside an artifacts or output folder, goes through here.
"""
from __future__ import annotations

import errno
import os
import re
import stat
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


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def open_inside(root: str | os.PathLike, rel: object, what: str = "path") -> int:
    """A read-only file descriptor of root/rel, opened without following any symbolic link inside root.

    Each folder on the way is opened relative to the previous one's descriptor with O_NOFOLLOW, and the
    file itself with O_NOFOLLOW and O_NONBLOCK (a FIFO cannot hang the reader): a link swapped in at any
    step after a check is refused, never followed. Use the descriptor (fstat, read): never reopen the path.

    Raises:
        ArtifactError: rel is not a relative path inside root (relative_path), or a part of it is a
            symbolic link. FileNotFoundError, IsADirectoryError, OSError: as os.open raises them.
    """
    parts = PurePosixPath(relative_path(rel, what)).parts
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | _NOFOLLOW | (getattr(os, "O_NONBLOCK", 0) if last else _DIRECTORY)
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(os.path.join(root, *parts[:i + 1])):
                    raise ArtifactError(f"{what} {_shown(rel)} is or passes through a symbolic link; "
                                        "links inside the folder are refused") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_inside(root: str | os.PathLike, rel: object, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file root/rel (open_inside), at most `limit` of them.

    Raises:
        ArtifactError: a symbolic link, not a regular file, or larger than limit (told before reading).
        OSError: as os.open raises it (FileNotFoundError when missing).
    """
    fd = open_inside(root, rel, what)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{what} {_shown(rel)} is not a regular file")
        if info.st_size > limit:
            raise ArtifactError(f"{what} {_shown(rel)} holds {info.st_size:,} bytes; at most {limit:,} are read")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ArtifactError(f"{what} {_shown(rel)} grew past {limit:,} bytes while it was read")
    return data


def _shown(value: object) -> str:
    """repr of an untrusted value, cut short: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
