"""Layer tars for the pool's tests: built with tarfile, gzipped like BuildKit's layers."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Member:
    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, chr, fifo
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()
    mtime: int = 1_700_000_000
    device: tuple[int, int] = (0, 0)


def layer_tar(members: list[Member]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mode, info.uid, info.gid, info.mtime = m.mode, m.uid, m.gid, m.mtime
            info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in m.xattrs}
            payload = None
            if m.kind == "file":
                info.size = len(m.data)
                payload = io.BytesIO(m.data)
            elif m.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif m.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, m.link
            elif m.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, m.link
            elif m.kind == "chr":
                info.type, (info.devmajor, info.devminor) = tarfile.CHRTYPE, m.device
            elif m.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            archive.addfile(info, payload)
    return out.getvalue()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
