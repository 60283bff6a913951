"""Unpack one layer blob into an overlayfs lower directory, checking both of its digests on the way.

The tree is what containerd's overlayfs snapshotter would hold for the layer
(its "upper" directory once committed): every member of the layer tar with
its owner, mode, times, extended attributes, hard links and device nodes, and
the OCI whiteouts in overlayfs form:

    <dir>/.wh.<name>       -> <dir>/<name> as a 0/0 character device
    <dir>/.wh..wh..opq     -> the xattr trusted.overlay.opaque=y on <dir>

Trust: the bytes come from a blob of the store, hashed while they stream
(sha256 of the compressed stream must be the blob's digest) and the
uncompressed tar is hashed too (it must be the layer's diffID).  Anything
else refuses the whole layer (`UnpackRefused`) and the caller throws the
tree away: a tree exists in the pool only if both digests matched.

Hostile tars: absolute names, `..` components, a member written through a
symlink (every path component is opened with O_NOFOLLOW relative to its
parent's directory fd), hard links to anything outside the layer's own tree.
The destination must be a fresh, empty directory composecache created.

Gzip runs through zlib in this process (no pigz needed; zlib and hashlib
release the GIL, so a reader thread overlaps decompression and hashing with
the file writes).  Uncompressed tars are read as they are; zstd is refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import stat
import tarfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
XATTR_PAX_PREFIX = "SCHILY.xattr."
CHUNK = 1 << 20
MAX_MEMBERS = 5_000_000
MAX_NAME_BYTES = 4096
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnpackRefused(Exception):
    """The layer cannot go into the pool (hostile, corrupt, unsupported); the message says why."""


@dataclass(frozen=True)
class UnpackResult:
    blob_digest: str  # sha256 of the compressed stream, as read
    diff_id: str  # sha256 of the uncompressed tar
    members: int
    bytes: int  # regular file bytes written


# --- the byte stream: blob -> (hash) -> gunzip -> (hash) -> tar --------------------------------------


class _LayerStream:
    """A file-like object giving the uncompressed tar; hashes both streams; a thread reads ahead."""

    def __init__(self, blob: BinaryIO) -> None:
        self._blob = blob
        self.compressed = hashlib.sha256()
        self.uncompressed = hashlib.sha256()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self._buffer = b""
        self._offset = 0
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for data in self._decompressed():
                self.uncompressed.update(data)
                while not self._stop.is_set():
                    try:
                        self._queue.put(data, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(None)
        except BaseException as exc:  # handed to the reader, raised there
            self._queue.put(exc)

    def _chunks(self) -> Iterator[bytes]:
        while chunk := self._blob.read(CHUNK):
            self.compressed.update(chunk)
            yield chunk

    def _decompressed(self) -> Iterator[bytes]:  # noqa: C901  (plain tar, gzip, multi-member gzip, every way to end)
        chunks = self._chunks()
        first = next(chunks, b"")
        if first.startswith(ZSTD_MAGIC):
            raise UnpackRefused("zstd-compressed layers are not pooled")
        if not first.startswith(GZIP_MAGIC):
            if first:
                yield first
            yield from chunks
            return
        decompressor = zlib.decompressobj(wbits=31)
        pending = first
        while True:
            if pending:
                try:
                    data = decompressor.decompress(pending)
                except zlib.error as exc:
                    raise UnpackRefused(f"the blob is not valid gzip ({exc})") from exc
                if data:
                    yield data
                if decompressor.eof:
                    rest = decompressor.unused_data
                    if rest.startswith(GZIP_MAGIC):  # a multi-member gzip file
                        decompressor = zlib.decompressobj(wbits=31)
                        pending = rest
                        continue
                    if rest.strip(b"\0"):
                        raise UnpackRefused("data after the end of the gzip stream")
            pending = next(chunks, b"")
            if not pending:
                break
        if not decompressor.eof:
            raise UnpackRefused("the gzip stream is truncated")

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) - self._offset < size):
            item = self._queue.get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._buffer = self._buffer[self._offset :] + item
                self._offset = 0
        end = len(self._buffer) if size < 0 else min(len(self._buffer), self._offset + size)
        data = self._buffer[self._offset : end]
        self._offset = end
        return data

    def drain(self) -> None:
        """Read to the end (the tar's end blocks and padding are part of the diffID)."""
        while self.read(CHUNK):
            pass

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=5)


# --- names ---------------------------------------------------------------------------------------


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name inside the layer; UnpackRefused for a hostile one."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise UnpackRefused("a member name is too long")
    if "\0" in name:
        raise UnpackRefused("a member name holds a NUL byte")
    if name.startswith("/"):
        raise UnpackRefused(f"absolute member name {name[:200]!r}")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnpackRefused(f"member name with '..' {name[:200]!r}")
    return parts


# --- the tree being written ----------------------------------------------------------------------


class _Tree:
    """Directory fds of the tree being filled; never follows a symlink."""

    def __init__(self, root: Path, parents: Sequence[Path]) -> None:
        self.root = root
        self.parents = list(parents)  # lower trees, nearest first: attributes for implied directories
        self._fds: dict[tuple[str, ...], int] = {(): os.open(root, DIR_NOFOLLOW)}
        self.dir_times: dict[tuple[str, ...], tuple[int, int]] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def forget(self, parts: tuple[str, ...]) -> None:
        """A directory was removed or replaced: drop its fd and every fd below it."""
        for key in [k for k in self._fds if k[: len(parts)] == parts and k]:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop(key))

    def dir_fd(self, parts: tuple[str, ...], create: bool = True) -> int:
        """The fd of directory `parts`, creating implied directories (never through a symlink)."""
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], create)
        name = parts[-1]
        try:
            fd = os.open(name, DIR_NOFOLLOW, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            self._make_implied_dir(parent, parts)
            fd = os.open(name, DIR_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnpackRefused(f"a member is written through a symlink or a file: {'/'.join(parts)}") from exc
            raise
        self._fds[parts] = fd
        return fd

    def _make_implied_dir(self, parent: int, parts: tuple[str, ...]) -> None:
        """A directory the tar names no entry for: as containerd does, copy it from a lower layer."""
        mode, uid, gid, times = 0o755, 0, 0, None
        for lower in self.parents:
            try:
                info = os.lstat(lower.joinpath(*parts))
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
                times = (info.st_atime_ns, info.st_mtime_ns)
            break
        os.mkdir(parts[-1], 0o700, dir_fd=parent)
        os.chown(parts[-1], uid, gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(parts[-1], mode, dir_fd=parent)
        if times is not None:
            self.dir_times[parts] = times

    def remove_existing(self, parent: int, parts: tuple[str, ...], keep_dir: bool) -> bool:
        """Make room for a member: True when a directory stays (a tar may name a directory twice)."""
        name = parts[-1]
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(info.st_mode):
            if keep_dir:
                return True
            self._remove_dir(parent, parts)
            return False
        os.unlink(name, dir_fd=parent)
        return False

    def _remove_dir(self, parent: int, parts: tuple[str, ...]) -> None:
        fd = self.dir_fd(parts, create=False)
        for entry in os.listdir(fd):
            info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                self._remove_dir(fd, (*parts, entry))
            else:
                os.unlink(entry, dir_fd=fd)
        self.forget(parts)
        self.dir_times.pop(parts, None)
        os.rmdir(parts[-1], dir_fd=parent)


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    found = []
    for key, value in member.pax_headers.items():
        if key.startswith(XATTR_PAX_PREFIX):
            raw = value.encode("utf-8", "surrogateescape")
            found.append((key[len(XATTR_PAX_PREFIX) :], raw))
    return found


def _set_xattrs(fd: int, attributes: list[tuple[str, bytes]]) -> None:
    for name, value in attributes:
        if name == OPAQUE_XATTR or name.startswith("trusted.overlay."):
            raise UnpackRefused(f"a member carries the overlayfs xattr {name}")
        os.setxattr(fd, name, value)


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    ns = int(member.mtime * 1_000_000_000)
    return ns, ns


class _Unpacker:
    def __init__(self, tree: _Tree) -> None:
        self.tree = tree
        self.members = 0
        self.bytes = 0

    def apply(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:  # noqa: C901  (one case per member type)
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise UnpackRefused(f"more than {MAX_MEMBERS} members")
        parts = member_parts(member.name)
        if not parts:
            return  # the layer's root directory: the tree's own root stays as composecache made it
        base = parts[-1]
        if base == OPAQUE_MARKER:
            fd = self.tree.dir_fd(parts[:-1])
            os.setxattr(fd, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX):
            target = (*parts[:-1], base[len(WHITEOUT_PREFIX) :])
            if not target[-1]:
                raise UnpackRefused(f"an empty whiteout name {member.name[:200]!r}")
            self._whiteout(target, member)
            return
        parent = self.tree.dir_fd(parts[:-1])
        if member.isdir():
            self._directory(parent, parts, member)
            return
        self.tree.remove_existing(parent, parts, keep_dir=False)
        if member.isreg():
            self._regular(archive, parent, base, member)
        elif member.issym():
            os.symlink(member.linkname, base, dir_fd=parent)
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(base, ns=_times(member), dir_fd=parent, follow_symlinks=False)
        elif member.islnk():
            self._hardlink(parent, base, member)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
            os.mknod(base, kind | 0o600, device, dir_fd=parent)
            self._finish_node(parent, base, member)
        else:
            raise UnpackRefused(f"unsupported member type {member.type!r} for {member.name[:200]!r}")

    def _directory(self, parent: int, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
        if not self.tree.remove_existing(parent, parts, keep_dir=True):
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        fd = self.tree.dir_fd(parts)
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        _set_xattrs(fd, _xattrs(member))
        self.tree.dir_times[parts] = _times(member)

    def _regular(self, archive: tarfile.TarFile, parent: int, base: str, member: tarfile.TarInfo) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        try:
            source = archive.extractfile(member)
            if source is not None and member.size:
                remaining = member.size
                while remaining > 0:
                    data = source.read(min(CHUNK, remaining))
                    if not data:
                        raise UnpackRefused(f"the tar ends inside {member.name[:200]!r}")
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    remaining -= len(data)
                self.bytes += member.size
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown: chown clears set-id bits
            _set_xattrs(fd, _xattrs(member))
            os.utime(fd, ns=_times(member))
        finally:
            os.close(fd)

    def _finish_node(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        os.chmod(base, member.mode & 0o7777, dir_fd=parent, follow_symlinks=False)
        attributes = _xattrs(member)
        if attributes:
            path = f"/proc/self/fd/{parent}/{base}"
            for name, value in attributes:
                if name.startswith("trusted.overlay."):
                    raise UnpackRefused(f"a member carries the overlayfs xattr {name}")
                os.setxattr(path, name, value, follow_symlinks=False)
        os.utime(base, ns=_times(member), dir_fd=parent, follow_symlinks=False)

    def _hardlink(self, parent: int, base: str, member: tarfile.TarInfo) -> None:
        target = member_parts(member.linkname)
        if not target:
            raise UnpackRefused(f"a hard link to the layer's root: {member.name[:200]!r}")
        try:
            source_dir = self.tree.dir_fd(target[:-1], create=False)
            info = os.stat(target[-1], dir_fd=source_dir, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise UnpackRefused(f"a hard link to {member.linkname[:200]!r}, which the layer does not hold") from exc
        if stat.S_ISDIR(info.st_mode):
            raise UnpackRefused(f"a hard link to a directory: {member.name[:200]!r}")
        os.link(target[-1], base, src_dir_fd=source_dir, dst_dir_fd=parent, follow_symlinks=False)

    def _whiteout(self, target: tuple[str, ...], member: tarfile.TarInfo) -> None:
        parent = self.tree.dir_fd(target[:-1])
        self.tree.remove_existing(parent, target, keep_dir=False)
        os.mknod(target[-1], stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)  # mode 0, as containerd makes them
        os.chown(target[-1], member.uid, member.gid, dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Directory times last (every write inside a directory changes its mtime), deepest first."""
        for parts, times in sorted(self.tree.dir_times.items(), key=lambda item: -len(item[0])):
            with contextlib.suppress(FileNotFoundError):
                parent = self.tree.dir_fd(parts[:-1], create=False)
                os.utime(parts[-1], ns=times, dir_fd=parent, follow_symlinks=False)


def unpack_layer(blob: Path, dest: Path, *, parents: Sequence[Path] = ()) -> UnpackResult:
    """Unpack `blob` into the empty directory `dest`; the digests it hashed to (the caller compares).

    `parents`: the lower layers' trees, nearest first (attributes of directories the tar implies).
    UnpackRefused for a hostile or unreadable layer; OSError for the filesystem (a full disk).
    """
    if os.listdir(dest):
        raise UnpackRefused(f"{dest} is not empty")
    fd = os.open(blob, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as raw:
        if not stat.S_ISREG(os.fstat(raw.fileno()).st_mode):
            raise UnpackRefused(f"{blob} is not a regular file")
        stream = _LayerStream(raw)
        tree = _Tree(dest, parents)
        unpacker = _Unpacker(tree)
        try:
            try:
                with tarfile.open(fileobj=cast(BinaryIO, stream), mode="r|", errorlevel=2) as archive:
                    for member in archive:
                        unpacker.apply(archive, member)
            except tarfile.TarError as exc:
                raise UnpackRefused(f"not a valid tar: {exc}") from exc
            stream.drain()
            unpacker.finish()
        finally:
            tree.close()
            stream.close()
    return UnpackResult(
        blob_digest=f"sha256:{stream.compressed.hexdigest()}",
        diff_id=f"sha256:{stream.uncompressed.hexdigest()}",
        members=unpacker.members,
        bytes=unpacker.bytes,
    )
