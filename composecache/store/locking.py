"""flock(2) on dedicated lock files.

Why flock on our own files: BuildKit's `index.json.lock` is taken with a
non-blocking try and deleted after use, so it cannot order anything; an flock
is released by the kernel when its holder dies (a killed build never leaves a
stale lock), and it works between processes of different sessions as long as
they see the same filesystem, whatever path each one mounts it at.

Locks are per open file description: two opens of the same file in one
process exclude each other like two processes do.

The store lock file is never deleted (deleting a lock file lets a waiter lock
an unlinked inode while a newcomer locks a fresh one).  Staging and lease lock
files are deleted by their owner when done; the only other opener is `gc`,
which uses a non-blocking try and treats a vanished file as gone.

A staging or lease lock file is locked before its name exists: create_and_lock
makes, locks and fills it under a hidden temp name beside it, then links it to
its name.  So a probe that finds a lock at its name free knows its owner has
finished or died, never that the owner has yet to lock it.  Nobody opens the
temp names; gc removes those a killed process left once they are old.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from composecache.store.safefs import FILE_MODE, UnsafePath, temp_path_beside

POLL_START_S = 0.01
POLL_MAX_S = 0.2
# link(2) errors of a filesystem without hard links (some FUSE and SMB mounts).
NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS})


class LockTimeout(OSError):
    """The lock was still held by someone else when the deadline passed."""


class HeldLock:
    """An exclusive flock we hold; released by release() or when the process exits."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def still_at_path(self) -> bool:
        """Whether `path` still names the file we hold (it may have been unlinked and replaced)."""
        if self._fd is None:
            return False
        try:
            mine, now = os.fstat(self._fd), os.lstat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last fd of the description drops the flock

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _open_lock_file(path: Path, create: bool) -> int:
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(errno.ELOOP, "is a symlink, refusing to use it as a lock", str(path)) from exc
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafePath(errno.EINVAL, "is not a regular file", str(path))
    return fd


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _wait_for_flock(fd: int, path: Path, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_START_S
    while not _try_flock(fd):
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeout(errno.EAGAIN, f"still locked after {timeout:.0f}s", str(path))
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)


def acquire(
    path: Path,
    *,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    what: str = "lock",
) -> HeldLock:
    """Take the lock, creating its file; a non-blocking try first, so a waiter can be told.

    `timeout` None waits for ever; otherwise LockTimeout after that many seconds.
    """
    fd = _open_lock_file(path, create=True)
    try:
        if not _try_flock(fd):
            if on_wait is not None:
                on_wait(f"waiting for the {what} ({path}) held by another process")
            _wait_for_flock(fd, path, timeout)
    except BaseException:
        os.close(fd)
        raise
    return HeldLock(path, fd)


def create_and_lock(path: Path, content: bytes = b"") -> HeldLock:
    """Create a new lock file at `path` holding `content`, locked before `path` names it.

    The file is created (O_EXCL|O_NOFOLLOW) under a hidden temp name beside
    `path`, locked, written, then linked to `path` (link never replaces a file,
    so FileExistsError when `path` exists) and the temp name removed.
    FileNotFoundError also when gc removed the temp name first (a process
    stalled past gc's grace period): the caller picks another name.
    """
    tmp = temp_path_beside(path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        _wait_for_flock(fd, tmp, timeout=0.0)  # nobody else opens a temp name: never one someone holds
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        _link_new(tmp, path)
        held = HeldLock(path, fd)
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):  # one left behind is gc's to remove
            os.unlink(tmp)
    if not held.still_at_path():  # a file planted at our temp name was linked instead
        held.release()
        raise UnsafePath(errno.EEXIST, "is not the lock file we created", str(path))
    return held


def _link_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        # No hard links on this filesystem: rename is as atomic but replaces, so check first
        # (new lock names carry 64 random bits: only a planted file could be there).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "already exists", str(path)) from exc
        os.rename(tmp, path)


def probe(path: Path) -> HeldLock | None:
    """For gc: None when someone holds the lock (a live owner), else the lock, now ours.

    A missing file raises FileNotFoundError: its owner finished meanwhile.
    """
    fd = _open_lock_file(path, create=False)
    if _try_flock(fd):
        return HeldLock(path, fd)
    os.close(fd)
    return None
