"""Atomic writes: build beside the target, rename on success, leave nothing behind on failure.

atomic_write for one file; for a folder, atomic_dir (or build_dir, then replace_dir): every writer of a
folder (export, stats, run's Zarr stores, Triton models, galleries) swaps it in through replace_dir.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from runtime.errors import TargetChanged


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


def build_dir(target: str | os.PathLike) -> Path:
    """A new empty hidden folder beside target (".NAME.tmp-XXXXXXXX") to build it in, for replace_dir.

    It gets the permissions a plain mkdir would give: mkdtemp's 0700 would outlive the rename.

    Raises:
        OSError: the folder cannot be created there.
    """
    target = Path(target)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(build, 0o777 & ~umask())
    except BaseException:
        os.rmdir(build)
        raise
    return build


def replace_dir(build: str | os.PathLike, target: str | os.PathLike, *,
                replaceable: Callable[[Path], None] | None = None) -> None:
    """Rename the finished folder build to target, replacing only a target that replaceable accepts.

    With replaceable None an existing target is never replaced. Otherwise an existing target is
    first renamed aside (never replacing anything), and checked there: it must be a real folder
    (not a symbolic link) and pass replaceable(aside), which raises if it is not what the caller
    may replace. So a folder that another program swapped in after the caller's first check is
    never deleted: it is put back, and the check's error raised. The previous folder is deleted
    only once build is in place. build stays the caller's to remove if this raises (atomic_dir does).

    Raises:
        TargetChanged: something else took target meanwhile (appeared: build was not renamed, and the
            folder moved aside, checked and meant to go, is deleted), target was not a real folder
            (put back), or a folder moved aside could not be put back (kept: where it is).
        whatever replaceable raises (the folder is back at target), OSError (the same), and on
            KeyboardInterrupt (Ctrl-C, SIGTERM in the CLIs) the previous folder is back too.
    """
    build, target = Path(build), Path(target)
    old = None
    try:
        if replaceable is not None and os.path.lexists(target):
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                rename_noreplace(target, old)
            except FileNotFoundError:  # another writer moved it first: nothing left to replace
                old = None
            if old is not None and (old.is_symlink() or not old.is_dir()):
                raise TargetChanged(f"{str(target)!r} is a symbolic link or not a folder (another program may have "
                                    "put it there meanwhile); left it as it is and wrote nothing", target)
            if old is not None:
                replaceable(old)
        try:
            rename_noreplace(build, target)
        except FileExistsError:
            if old is not None:  # target is someone else's now; the folder that was to be replaced goes as asked
                shutil.rmtree(old, ignore_errors=True)
                old = None
            raise TargetChanged(f"{str(target)!r} appeared while it was being written (another program wrote it); "
                                "left it as it is and wrote nothing", target, appeared=True) from None
    except BaseException:
        if old is not None:
            _put_back(old, target)
        raise
    if old is not None:
        try:
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:  # interrupted halfway: finish, so that no temporary stays
            shutil.rmtree(old, ignore_errors=True)
            raise


def _put_back(old: Path, target: Path) -> None:
    """Rename a folder moved aside by replace_dir back to target (if it was moved at all).

    Raises:
        TargetChanged: target was taken meanwhile; the folder stays where it is (kept).
    """
    if not os.path.lexists(old):  # interrupted before the rename aside happened
        return
    try:
        rename_noreplace(old, target)
    except OSError:
        raise TargetChanged(f"{str(target)!r} was replaced by another program while it was being written; the "
                            f"previous one is kept at {str(old)!r}", target, kept=old) from None


@contextmanager
def atomic_dir(target: str | os.PathLike, *, replaceable: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Build a folder in build_dir(target); it replaces target (replace_dir) only if the block succeeds.

    After any failure or interrupt the temporary folder is gone and target is as it was.
    """
    build = build_dir(target)
    try:
        yield build
        replace_dir(build, target, replaceable=replaceable)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
