"""Low-level disk operations on the temp directory and on persist targets."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import IO, Any

from .conf import conf

logger = logging.getLogger("django_tempstore")

#: Every temp file this app creates matches this; the sweep touches nothing else.
NAME_RE = re.compile(r"\Atsu-[0-9a-f]{32}\Z")
#: Prefix of the half-copied file a cross-filesystem persist writes beside its target.
PART_PREFIX = ".tsu-"

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def new_name() -> str:
    """Return a fresh, unpredictable temp name (128 random bits)."""
    return f"tsu-{secrets.token_hex(16)}"


class UnsafeTempDir(PermissionError):
    """``TEMPSTORE_DIR`` exists but other users could plant or swap files in it."""


def unsafe_dir_reason(st: os.stat_result) -> str | None:
    """Why a directory with ``lstat()`` result ``st`` is unsafe for temp files, or None.

    It must be a real directory (not a symlink), owned by this process's user
    (or root), and writable by no one else: in a shared parent such as /tmp,
    another local user could have created it first.
    """
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid not in (os.geteuid(), 0):
        return f"is owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by its group or by everyone (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _refusal(path: Path, reason: str) -> UnsafeTempDir:
    return UnsafeTempDir(
        errno.EPERM,
        f"TEMPSTORE_DIR {reason}; make it a directory of the user running Django, "
        "mode 0700, or point TEMPSTORE_DIR elsewhere",
        str(path),
    )


def open_dir(path: Path | None = None, *, private: bool = True) -> int:
    """Open the temp directory as a descriptor that no later swap of its path can redirect.

    Raise ``UnsafeTempDir`` if the path is a symlink (or, with ``private``, if
    other users could write to it), the OSError of ``open()`` otherwise
    (FileNotFoundError, NotADirectoryError). The caller closes the descriptor.
    """
    path = conf.DIR if path is None else path
    try:
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise _refusal(path, "is a symbolic link") from exc
        raise
    reason = unsafe_dir_reason(os.fstat(fd)) if private else None
    if reason is not None:
        os.close(fd)
        raise _refusal(path, reason)
    return fd


def ensure_dir(path: Path | None = None) -> Path:
    """Create the temp directory (mode 0700) if it does not exist; refuse an unsafe one.

    Raise ``UnsafeTempDir`` if the path exists but is not a private directory.
    """
    path = conf.DIR if path is None else path
    os.close(_ensure_dir_fd(path))
    return path


def _ensure_dir_fd(path: Path) -> int:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(path.parent, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        return open_dir(path)
    except NotADirectoryError as exc:
        raise _refusal(path, "is not a directory") from exc


def create_temp(name: str) -> IO[bytes]:
    """Create ``name`` in the temp dir: exclusive, no symlink, mode 0600."""
    dir_fd = _ensure_dir_fd(conf.DIR)
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, "w+b", buffering=0)


def open_temp(name: str, mode: str = "rb") -> IO[Any]:
    """Open an existing temp file for reading, never through a symlink."""
    if not NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a django-tempstore temp name.")
    dir_fd = open_dir(conf.DIR, private=False)
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    return os.fdopen(fd, mode)


def unlink_temp(name: str) -> bool:
    """Delete the temp file ``name`` through the temp dir's descriptor; False if gone.

    Never through a symlinked TEMPSTORE_DIR (refused, logged); other errors logged.
    """
    try:
        dir_fd = open_dir(conf.DIR, private=False)
    except OSError:
        logger.exception("django-tempstore could not open TEMPSTORE_DIR to delete %s", name)
        return False
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except OSError:
        logger.exception("django-tempstore could not delete %s", conf.DIR / name)
        return False
    finally:
        os.close(dir_fd)
    return True


def unlink(path: Path | str) -> bool:
    """Delete ``path``; return False if it was already gone. Log other errors."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError:
        logger.exception("django-tempstore could not delete %s", path)
        return False
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # Some filesystems refuse fsync on a directory.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _libc_sync_file_range() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` to disk, without waiting.

    Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)``; a no-op elsewhere. It
    makes no promise by itself: it only shortens the ``sync_data()`` that follows.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def drop_cached(fd: int, offset: int, length: int) -> None:
    """Let the kernel drop ``length`` synced bytes at ``offset`` from the page cache."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):  # Advice only.
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def sync_data(fd: int) -> None:
    """Wait until the file's bytes and size are on disk (``fdatasync``, else ``fsync``)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def free_space(path: Path | None = None) -> int:
    """Bytes available to this process on the filesystem of ``path``."""
    path = conf.DIR if path is None else path
    # Measuring an unsafe dir is harmless: create_temp() refuses to write there.
    with contextlib.suppress(UnsafeTempDir):
        path = ensure_dir(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # No /proc: read it by setting it, then restore it.
    os.umask(mask)
    return mask


def link_atomic(
    source: Path, target: Path, *, mode: int | None = None, part: Path | None = None
) -> None:
    """Make ``source``'s bytes appear at ``target`` all at once, never overwriting.

    Same filesystem: fsync, then a hard link. Across filesystems (EXDEV): copy to a hidden
    part file in the target directory, fsync, link it into place, fsync the
    directory. Raise FileExistsError if ``target`` exists; ``source`` stays.
    The mode is set through a descriptor, before the name appears. ``part``
    names the part file (default: a fresh ``part_path(target)``).
    """
    src_fd = os.open(source, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        if mode is not None:
            # Hard link or copy, the mode is set on the inode the name will
            # point to, through the descriptor: never through a path.
            os.fchmod(src_fd, mode)
        # The upload path never fsyncs (that would cost on every upload): a
        # persisted file's data must be on disk before its name can be.
        os.fsync(src_fd)
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            _copy_then_link(src_fd, target, 0o600 if mode is None else mode, part)
    finally:
        os.close(src_fd)
    fsync_dir(target.parent)


def part_path(target: Path) -> Path:
    """A fresh hidden part-file path beside ``target``."""
    return target.parent / f"{PART_PREFIX}{secrets.token_hex(16)}.part"


def _copy_then_link(src_fd: int, target: Path, mode: int, part: Path | None = None) -> None:
    part = part_path(target) if part is None else part
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    fd = os.open(part, flags, 0o600)
    try:
        os.fchmod(fd, mode)
        os.lseek(src_fd, 0, os.SEEK_SET)
        with (
            os.fdopen(os.dup(src_fd), "rb") as src,
            os.fdopen(fd, "wb", closefd=False) as dst,
        ):
            shutil.copyfileobj(src, dst, 1024 * 1024)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink(part)
        raise
    os.close(fd)
    try:
        _place(part, target)
    finally:
        unlink(part)


def _place(part: Path, target: Path) -> None:
    try:
        os.link(part, target, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from exc
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        # No hard links here (some network filesystems): rename, after a check.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "File exists", str(target)) from exc
        os.rename(part, target)


def same_file(path: Path, st: os.stat_result) -> bool:
    """True if ``path`` is still the inode described by ``st``."""
    try:
        other = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(other.st_mode) and (other.st_dev, other.st_ino) == (
        st.st_dev,
        st.st_ino,
    )
