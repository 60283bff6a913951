"""`verify --deep` for the pool: does a tree still hold exactly what its blob unpacks to?

A tree cannot be re-hashed like a blob, but it can be compared with its blob:
the blob is streamed again (both digests re-checked) and every member is
compared with the tree (type, mode, owner, size, bytes, link target, device
number); a path in the tree that no member explains is a mismatch too.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from composecache.store.unpack import (
    CHUNK,
    OPAQUE_MARKER,
    OPAQUE_XATTR,
    WHITEOUT_PREFIX,
    UnpackRefused,
    _LayerStream,
    member_parts,
)

if TYPE_CHECKING:
    from composecache.store.pool import EntryInfo

Expected = tuple[str, ...]


def _same_bytes(path: Path, source: IO[bytes] | None, size: int) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        remaining = size
        while remaining > 0:
            want = min(CHUNK, remaining)
            expected = source.read(want) if source is not None else b""
            if len(expected) != want:
                return False
            actual = b""
            while len(actual) < want:
                chunk = os.read(fd, want - len(actual))
                if not chunk:
                    return False
                actual += chunk
            if actual != expected:
                return False
            remaining -= want
        return os.read(fd, 1) == b""
    finally:
        os.close(fd)


def _describe(info: os.stat_result) -> str:
    return f"mode {stat.filemode(info.st_mode)} uid {info.st_uid} gid {info.st_gid} size {info.st_size}"


def compare_tree(blob: Path, tree: Path, entry: EntryInfo) -> str | None:  # noqa: C901, PLR0912  (one case per tar member type)
    """None when `tree` is what `blob` unpacks to; else the first difference found."""
    expected: dict[tuple[str, ...], tuple[str, ...]] = {}
    opaque: set[tuple[str, ...]] = set()
    content_wrong: set[tuple[str, ...]] = set()
    fd = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as raw:
        stream = _LayerStream(raw)
        try:
            with tarfile.open(fileobj=cast(BinaryIO, stream), mode="r|") as archive:
                for member in archive:
                    parts = member_parts(member.name)
                    if not parts:
                        continue
                    base = parts[-1]
                    if base == OPAQUE_MARKER:
                        opaque.add(parts[:-1])
                        continue
                    if base.startswith(WHITEOUT_PREFIX):
                        expected[(*parts[:-1], base[len(WHITEOUT_PREFIX) :])] = ("whiteout",)
                        continue
                    mode, owner = str(member.mode & 0o7777), f"{member.uid}:{member.gid}"
                    if member.isdir():
                        expected[parts] = ("dir", mode, owner)
                    elif member.isreg():
                        expected[parts] = ("reg", mode, owner, str(member.size))
                        content_wrong.discard(parts)
                        path = tree.joinpath(*parts)
                        try:
                            if not _same_bytes(path, archive.extractfile(member), member.size):
                                content_wrong.add(parts)
                        except OSError:
                            content_wrong.add(parts)
                    elif member.issym():
                        expected[parts] = ("sym", member.linkname, owner)
                    elif member.islnk():
                        expected[parts] = ("link", "/".join(member_parts(member.linkname)))
                    else:
                        kind = "chr" if member.ischr() else "blk" if member.isblk() else "fifo"
                        expected[parts] = (kind, mode, owner, f"{member.devmajor}:{member.devminor}")
            stream.drain()
        except (tarfile.TarError, UnpackRefused) as exc:
            return f"its blob no longer unpacks ({exc})"
        finally:
            stream.close()
    if f"sha256:{stream.compressed.hexdigest()}" != entry.blob:
        return f"its blob {entry.blob} no longer matches its digest"
    if f"sha256:{stream.uncompressed.hexdigest()}" != entry.diff_id:
        return "its blob no longer unpacks to the entry's diffID"
    return _compare(tree, expected, opaque, content_wrong)


def _compare(  # noqa: C901, PLR0911, PLR0912  (one case per member type, the first difference returned)
    tree: Path,
    expected: dict[tuple[str, ...], tuple[str, ...]],
    opaque: set[tuple[str, ...]],
    content_wrong: set[tuple[str, ...]],
) -> str | None:
    if content_wrong:
        return f"{'/'.join(sorted(content_wrong)[0])}: its content differs from the blob"
    for parts, want in sorted(expected.items()):
        path = tree.joinpath(*parts)
        name = "/".join(parts)
        try:
            info = os.lstat(path)
        except OSError:
            return f"{name}: missing"
        kind = want[0]
        mode, owner = str(stat.S_IMODE(info.st_mode)), f"{info.st_uid}:{info.st_gid}"
        if kind == "whiteout":
            ok = stat.S_ISCHR(info.st_mode) and info.st_rdev == 0
        elif kind == "dir":
            ok = stat.S_ISDIR(info.st_mode) and (mode, owner) == want[1:]
        elif kind == "reg":
            ok = stat.S_ISREG(info.st_mode) and (mode, owner, str(info.st_size)) == want[1:]
        elif kind == "sym":
            ok = stat.S_ISLNK(info.st_mode) and os.readlink(path) == want[1] and owner == want[2]
        elif kind == "link":
            try:
                target = os.lstat(tree / want[1])
            except OSError:
                return f"{name}: the file it is a hard link of is missing"
            ok = (target.st_ino, target.st_dev) == (info.st_ino, info.st_dev)
        else:
            type_ok = {"chr": stat.S_ISCHR, "blk": stat.S_ISBLK, "fifo": stat.S_ISFIFO}[kind](info.st_mode)
            device = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}" if kind != "fifo" else want[3]
            ok = type_ok and (mode, owner, device) == want[1:]
        if not ok:
            return f"{name}: {_describe(info)} is not what the blob holds"
    for parts in sorted(opaque):
        try:
            if os.getxattr(tree.joinpath(*parts), OPAQUE_XATTR, follow_symlinks=False) != b"y":
                return f"{'/'.join(parts)}: not marked opaque"
        except OSError:
            return f"{'/'.join(parts)}: not marked opaque"
    implied = {parts[:i] for parts in [*expected, *opaque] for i in range(1, len(parts))}
    for directory, dirs, files in os.walk(tree):
        relative = Path(directory).relative_to(tree).parts
        for name in [*dirs, *files]:
            parts = (*relative, name)
            if parts not in expected and parts not in implied and parts not in opaque:
                return f"{'/'.join(parts)}: in the tree but not in the blob"
    return None
