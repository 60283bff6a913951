"""Filesystem primitives that never follow a symlink planted inside the store.

The store is shared by many sessions, so anything inside it may have been
replaced by a symlink pointing elsewhere (`/etc`, another user's home).  Every
directory we use is checked with lstat, every file is opened with O_NOFOLLOW,
and every write that others may read at the same time is atomic: a temp file
beside the target, fsync, os.replace, fsync of the directory.

Permissions: directories 2775 (group-shareable, setgid so the group sticks),
files 0664; nothing we create is world-writable whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

DIR_MODE = 0o2775
FILE_MODE = 0o664
SMALL_FILE_LIMIT = 16 * 1024 * 1024  # no index or manifest we read is anywhere near this

# The temp files made beside a target by atomic_write_bytes, and beside a new lock file by
# locking.create_and_lock (one is left when its writer is killed).
TEMP_NAME_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")

# errno values meaning "this store is readable but we may not write to it".
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class UnsafePath(OSError):
    """A path inside the store is not what we created (a symlink, a file where a directory belongs)."""


def describe_os_error(exc: OSError) -> str:
    reason = exc.strerror or exc.__class__.__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


def check_dir(path: Path) -> None:
    """Raise UnsafePath unless `path` is a real directory (not a symlink to one)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(errno.ELOOP, "is a symlink, refusing to follow it", str(path))
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(errno.ENOTDIR, "is not a directory", str(path))


def ensure_dir(path: Path, mode: int = DIR_MODE) -> bool:
    """Create `path` (its parent must exist) unless present; refuse symlinks. True when created."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        check_dir(path)
        return False
    os.chmod(path, mode)  # the umask may have removed group bits
    return True


def ensure_relative_link(path: Path, target: str) -> None:
    """`path` must be a symlink whose target is exactly `target` (relative, inside the store)."""
    try:
        os.symlink(target, path)
        return
    except FileExistsError:
        pass
    if not is_link_to(path, target):
        raise UnsafePath(errno.EEXIST, f"is not a symlink to {target}", str(path))


def is_link_to(path: Path, target: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode) and os.readlink(path) == target
    except OSError:
        return False


def read_small_file(path: Path, limit: int = SMALL_FILE_LIMIT) -> bytes:
    """Read a regular file without following a symlink at its last component."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(errno.EINVAL, "is not a regular file", str(path))
        if info.st_size > limit:
            raise UnsafePath(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UnsafePath(errno.EFBIG, f"is larger than {limit} bytes", str(path))
        return data
    finally:
        os.close(fd)


def read_json(path: Path, limit: int = SMALL_FILE_LIMIT) -> Any:
    """Parse a small JSON file; ValueError for bad JSON, OSError for I/O or an unsafe path."""
    return json.loads(read_small_file(path, limit))


def temp_path_beside(path: Path) -> Path:
    """A fresh hidden name in `path`'s directory (matches TEMP_NAME_RE; listings of ours skip it)."""
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE, *, durable: bool = True) -> None:
    """Replace `path` atomically: readers see the old content or the new one, never a mix.

    The temp file is created beside the target with O_EXCL|O_NOFOLLOW, so a
    planted symlink cannot redirect the write; os.replace replaces a symlink
    at `path` itself rather than following it.  durable=False skips the fsyncs
    (for what may be lost in a crash, like the session memo).
    """
    tmp = temp_path_beside(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, sort_keys=True).encode() + b"\n", durable=durable)


def create_exclusive(path: Path, data: bytes = b"", mode: int = FILE_MODE) -> int:
    """Create a new file (never an existing one, never through a symlink); return its open fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        if data:
            os.write(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_tree(path: Path) -> None:
    """Remove a file, a symlink (never its target) or a directory tree (symlinks inside not followed)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(path)
        return
    # os.fwalk, not shutil.rmtree: importing shutil (bz2, lzma) costs ~4 ms on every build, which
    # removes its staging directory (measured; tests/unit/test_import_budget.py keeps shutil out).
    # Like rmtree it works through directory fds and never descends a symlink (fwalk lists a
    # symlink to a directory among the directories without entering it: it is unlinked here).
    # Files BuildKit writes are 0444; unlinking needs only the directory's write bit.
    for _, dirs, files, fd in os.fwalk(path, topdown=False):
        for name in files:
            os.unlink(name, dir_fd=fd)
        for name in dirs:
            try:
                os.rmdir(name, dir_fd=fd)
            except NotADirectoryError:
                os.unlink(name, dir_fd=fd)
    os.rmdir(path)


def unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_world_writable(path: Path) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return bool(info.st_mode & stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
