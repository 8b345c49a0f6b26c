"""Atomic writes: build beside the target, rename on success, leave nothing behind on failure."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside path; it replaces path only if the block succeeds.

    The file gets the permissions a plain open() would give (mkstemp's are 0600).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_RENAME_NOREPLACE = 1  # linux/fs.h


def rename_noreplace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename src to dst, failing with FileExistsError if dst exists: never replaces anything.

    Uses Linux renameat2(RENAME_NOREPLACE), which decides atomically. Where that is missing (other
    systems, some file systems) it falls back to os.rename after a check: for a folder src,
    os.rename itself refuses a non-empty dst, so at worst an empty folder created in between is replaced.

    Raises:
        FileExistsError: dst exists. OSError: any other failure of the rename.
    """
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: the file system does not support the flag
            raise FileExistsError(code, os.strerror(code), os.fspath(dst)) if code == errno.EEXIST \
                else OSError(code, os.strerror(code), os.fspath(src))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst)) from None
        raise
