"""store/unpack.py: a layer tar becomes an overlayfs lower directory; hostile tars are refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from composecache.store.unpack import OPAQUE_XATTR, UnpackRefused, member_parts, unpack_layer
from tests.unit.pool_fakes import Member, gzipped, layer_tar, sha, write

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="owners, devices and trusted xattrs need root")


def _unpack(tmp_path: Path, members: list[Member], *, compress: bool = True, parents: list[Path] | None = None):  # type: ignore[no-untyped-def]
    raw = layer_tar(members)
    blob = write(tmp_path / "blob", gzipped(raw) if compress else raw)
    dest = tmp_path / "tree"
    dest.mkdir()
    return unpack_layer(blob, dest, parents=parents or []), dest, raw, blob


@root_only
def test_members_keep_owner_mode_times_xattrs_links_and_devices(tmp_path: Path) -> None:
    members = [
        Member("etc/", "dir", mode=0o750, uid=10, gid=20),
        Member("etc/conf", data=b"hello\n", mode=0o640, uid=1000, gid=1001, xattrs=(("user.note", "x"),)),
        Member("bin/", "dir"),
        Member("bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
        Member("bin/alias", "hardlink", link="bin/tool"),
        Member("lib", "symlink", link="usr/lib", uid=5, gid=6),
        Member("dev/", "dir"),
        Member("dev/null", "chr", mode=0o666, device=(1, 3)),
        Member("dev/pipe", "fifo", mode=0o600),
    ]
    result, tree, raw, blob = _unpack(tmp_path, members)
    assert result.diff_id == sha(raw)
    assert result.blob_digest == sha(blob.read_bytes())
    assert result.members == len(members)
    conf = os.lstat(tree / "etc/conf")
    assert (stat.S_IMODE(conf.st_mode), conf.st_uid, conf.st_gid) == (0o640, 1000, 1001)
    assert conf.st_mtime == 1_700_000_000
    assert os.getxattr(tree / "etc/conf", "user.note") == b"x"
    assert stat.S_IMODE(os.lstat(tree / "etc").st_mode) == 0o750
    assert os.lstat(tree / "etc").st_mtime == 1_700_000_000  # directory times set last
    assert stat.S_IMODE(os.lstat(tree / "bin/tool").st_mode) == 0o4755  # set-id kept (chmod after chown)
    assert os.lstat(tree / "bin/alias").st_ino == os.lstat(tree / "bin/tool").st_ino
    assert os.readlink(tree / "lib") == "usr/lib"
    assert (os.lstat(tree / "lib").st_uid, os.lstat(tree / "lib").st_gid) == (5, 6)
    null = os.lstat(tree / "dev/null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISFIFO(os.lstat(tree / "dev/pipe").st_mode)


@root_only
def test_whiteouts_become_overlayfs_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    members = [
        Member("data/", "dir"),
        Member("data/.wh.removed"),
        Member("gone/", "dir"),
        Member("gone/.wh..wh..opq"),
        Member("gone/new", data=b"new\n"),
    ]
    _, tree, _, _ = _unpack(tmp_path, members)
    removed = os.lstat(tree / "data/removed")
    assert stat.S_ISCHR(removed.st_mode) and removed.st_rdev == 0 and stat.S_IMODE(removed.st_mode) == 0
    assert not os.path.lexists(tree / "data/.wh.removed")
    assert os.getxattr(tree / "gone", OPAQUE_XATTR) == b"y"
    assert sorted(os.listdir(tree / "gone")) == ["new"]


@root_only
def test_a_directory_the_tar_implies_takes_its_attributes_from_the_lower_layer(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "srv").mkdir(parents=True)
    os.chown(lower / "srv", 33, 34)
    os.chmod(lower / "srv", 0o710)
    _, tree, _, _ = _unpack(tmp_path, [Member("srv/app.txt", data=b"a"), Member("new/file", data=b"b")],
                            parents=[lower])  # fmt: skip
    srv = os.lstat(tree / "srv")
    assert (stat.S_IMODE(srv.st_mode), srv.st_uid, srv.st_gid) == (0o710, 33, 34)
    assert stat.S_IMODE(os.lstat(tree / "new").st_mode) == 0o755  # nowhere below: 0755 root


def test_an_uncompressed_layer_unpacks_and_its_diff_id_is_its_digest(tmp_path: Path) -> None:
    result, tree, raw, _ = _unpack(tmp_path, [Member("a.txt", data=b"plain")], compress=False)
    assert result.diff_id == result.blob_digest == sha(raw)
    assert (tree / "a.txt").read_bytes() == b"plain"


def test_a_later_member_replaces_an_earlier_one(tmp_path: Path) -> None:
    members = [Member("x", data=b"one"), Member("x", data=b"two"), Member("d/", "dir"), Member("d", data=b"file")]
    _, tree, _, _ = _unpack(tmp_path, members)
    assert (tree / "x").read_bytes() == b"two"
    assert (tree / "d").read_bytes() == b"file"


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([Member("/etc/passwd", data=b"x")], "absolute"),
        ([Member("../outside", data=b"x")], ".."),
        ([Member("a/../../outside", data=b"x")], ".."),
        ([Member("esc", "symlink", link="{outside}"), Member("esc/planted", data=b"x")], "symlink"),
        ([Member("esc", "symlink", link="../.."), Member("esc/planted", data=b"x")], "symlink"),
        ([Member("link", "hardlink", link="../outside/target")], ".."),
        ([Member("link", "hardlink", link="not/there")], "does not hold"),
        ([Member("f", data=b"x", xattrs=(("trusted.overlay.opaque", "y"),))], "overlayfs xattr"),
        ([Member("f", data=b"x"), Member("f/under", data=b"y")], "symlink or a file"),
    ],
)
def test_hostile_layers_are_refused_and_nothing_is_written_outside(
    tmp_path: Path, members: list[Member], reason: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target").write_bytes(b"keep")
    members = [Member(m.name, m.kind, m.data, m.mode, m.uid, m.gid, m.link.replace("{outside}", str(outside)),
                      m.xattrs) for m in members]  # fmt: skip
    with pytest.raises(UnpackRefused, match=reason):
        _unpack(tmp_path, members)
    assert sorted(os.listdir(outside)) == ["target"]
    assert (outside / "target").read_bytes() == b"keep"
    assert not (tmp_path / "planted").exists()


def test_corrupt_streams_are_refused(tmp_path: Path) -> None:
    good = gzipped(layer_tar([Member("a", data=os.urandom(100_000))]))
    cases = {
        "truncated": good[: len(good) // 2],
        "garbage after": good + b"garbage",
        "zstd": b"\x28\xb5\x2f\xfd" + b"\0" * 100,
    }
    for name, data in cases.items():
        dest = tmp_path / name
        dest.mkdir()
        with pytest.raises(UnpackRefused):
            unpack_layer(write(tmp_path / f"{name}.blob", data), dest)


def test_a_destination_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    blob = write(tmp_path / "blob", gzipped(layer_tar([Member("a", data=b"x")])))
    dest = tmp_path / "tree"
    dest.mkdir()
    (dest / "already").write_bytes(b"")
    with pytest.raises(UnpackRefused, match="not empty"):
        unpack_layer(blob, dest)


def test_member_names_are_normalised() -> None:
    assert member_parts("./a//b/./c") == ("a", "b", "c")
    assert member_parts("./") == ()
    for bad in ("/abs", "a/../b", "..", "x\0y"):
        with pytest.raises(UnpackRefused):
            member_parts(bad)
