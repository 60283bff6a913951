"""A byte-level picture of directory trees, to show an operation left them exactly as they were."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def snapshot(*roots: Path) -> dict[str, tuple[object, ...]]:
    """Everything under roots: type, mode, inode, mtime (not for directories), symlink target or bytes."""
    found: dict[str, tuple[object, ...]] = {}
    for root in roots:
        for directory, dirs, files in os.walk(root):
            for name in sorted(dirs + files):
                path = Path(directory, name)
                info = path.lstat()
                content: object = None
                if stat.S_ISLNK(info.st_mode):
                    content = os.readlink(path)
                elif stat.S_ISREG(info.st_mode):
                    content = path.read_bytes()
                mtime = None if stat.S_ISDIR(info.st_mode) else info.st_mtime_ns
                found[str(path)] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_ino, mtime, content)
    return found
