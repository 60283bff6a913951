"""Opening the store: layout creation, permissions, refusing unsafe or corrupt layouts, read-only."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from composecache.errors import CacheUnavailable
from composecache.store import Store
from composecache.store import layout as layout_mod
from tests.unit.store_fakes import publish_layers, tree_snapshot


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_mode for p in [root, *root.rglob("*")]}


def test_open_creates_the_layout_group_shareable_and_nothing_world_writable(tmp_path: Path) -> None:
    old = os.umask(0o077)  # a strict umask must not make the store private to one user
    try:
        store = Store.open(tmp_path / "a" / "b" / "cache")
        publish_layers(store, "api", [b"layer"])
    finally:
        os.umask(old)
    assert store.writable
    assert store.root == tmp_path / "a" / "b" / "cache" / "ns" / store.root.name
    for rel, mode in _modes(tmp_path / "a" / "b" / "cache").items():
        assert not mode & stat.S_IWOTH or stat.S_ISLNK(mode), rel
        if stat.S_ISDIR(mode):
            assert mode & 0o7777 == 0o2775, rel
        elif stat.S_ISREG(mode) and "blobs/" not in rel:  # blobs are BuildKit's (0444)
            assert mode & 0o777 == 0o664, rel
    assert json.loads((store.base / "composecache-store.json").read_text())["layout"] == 1


def test_open_is_idempotent_and_keeps_content(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "cache")
    publish_layers(store, "api", [b"x"])
    again = Store.open(tmp_path / "cache")
    assert again.scope_exists("api")


def test_existing_user_directory_mode_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir(mode=0o750)
    os.chmod(tmp_path / "cache", 0o750)
    Store.open(tmp_path / "cache")
    assert (tmp_path / "cache").stat().st_mode & 0o7777 == 0o750


def test_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("not a dir")
    with pytest.raises(CacheUnavailable, match="not a directory"):
        Store.open(tmp_path / "cache")


@pytest.mark.parametrize("planted", ["ns", "ns/{ns}", "ns/{ns}/blobs", "ns/{ns}/blobs/sha256", "ns/{ns}/staging",
                                     "ns/{ns}/scopes", "ns/{ns}/locks"])  # fmt: skip
def test_planted_symlink_escaping_the_root_is_refused(tmp_path: Path, planted: str) -> None:
    store = Store.open(tmp_path / "cache")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = store.base / planted.format(ns=store.root.name)
    shutil.rmtree(target)
    target.symlink_to(outside)
    for read_only in (False, True):
        with pytest.raises(CacheUnavailable, match="symlink"):
            Store.open(tmp_path / "cache", read_only=read_only)
    assert list(outside.iterdir()) == []


def test_planted_lock_file_symlink_is_refused(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "cache")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    store.layout.store_lock.unlink()
    store.layout.store_lock.symlink_to(victim)
    with pytest.raises(CacheUnavailable, match="symlink"):
        Store.open(tmp_path / "cache")
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": "other"}', '{"format": "composecache-store"}'])
def test_corrupt_layout_marker_is_unavailable(tmp_path: Path, content: str) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "composecache-store.json").write_text(content)
    with pytest.raises(CacheUnavailable, match="layout marker") as info:
        Store.open(tmp_path / "cache")
    assert info.value.hint


def test_newer_layout_is_unavailable_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "composecache-store.json").write_text('{"format": "composecache-store", "layout": 99}')
    with pytest.raises(CacheUnavailable, match="layout 99") as info:
        Store.open(tmp_path / "cache")
    assert info.value.hint is not None
    assert "upgrade" in info.value.hint


def test_read_only_open_never_writes(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "cache")
    publish_layers(store, "api", [b"layer one", b"layer two"])
    before = tree_snapshot(tmp_path / "cache")
    reader = Store.open(tmp_path / "cache", read_only=True)
    assert not reader.writable
    spec = reader.prepare_import("api")
    assert spec is not None
    assert spec.lease is None
    assert reader.peek_import("api") == spec
    assert reader.prepare_import("missing") is None
    reader.stats()
    reader.verify(deep=True)
    with pytest.raises(CacheUnavailable, match="read-only"):
        reader.prepare_export("api")
    assert tree_snapshot(tmp_path / "cache") == before


def test_read_only_open_of_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(CacheUnavailable, match="does not exist"):
        Store.open(tmp_path / "nope", read_only=True)
    assert not (tmp_path / "nope").exists()


def test_unwritable_store_opens_for_import_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES/EROFS on the write probe: writable False, imports still work (root ignores modes, so fake it)."""
    store = Store.open(tmp_path / "cache")
    publish_layers(store, "api", [b"layer"])
    staging = store.prepare_export("api")
    real_open = os.open

    def refusing_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    reader = Store.open(tmp_path / "cache")
    assert not reader.writable
    assert reader.prepare_import("api") is not None
    outcome = reader.publish(staging, keep=True)
    assert not outcome.published
    assert "read-only" in outcome.reason
    with pytest.raises(CacheUnavailable, match="read-only"):
        reader.prepare_export("api")
    monkeypatch.undo()
    store.discard(staging)


def test_uncreatable_root_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "cache"))

    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(CacheUnavailable, match="cannot create") as info:
        Store.open(tmp_path / "cache")
    assert info.value.hint


def test_world_writable_root_gives_a_warning(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    os.chmod(tmp_path / "cache", 0o777)
    assert any("world-writable" in w for w in Store.open(tmp_path / "cache").warnings)
    assert layout_mod.warnings_for(Store.open(tmp_path / "cache").layout)


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    if not _can_mount():
        pytest.skip("bind mounts need root")
    source, mount_point = tmp_path / "cache", tmp_path / "ro"
    source.mkdir()
    mount_point.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mount_point)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount_point)], check=True)
        yield source, mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_read_only_mount_opens_unwritable_and_imports(read_only_mount: tuple[Path, Path]) -> None:
    source, mount_point = read_only_mount
    writer = Store.open(source)
    publish_layers(writer, "api", [b"layer"])
    before = tree_snapshot(source)
    store = Store.open(mount_point)
    assert not store.writable
    spec = store.prepare_import("api")
    assert spec is not None
    assert spec.cache_from.startswith(f"type=local,src={mount_point}/")
    with pytest.raises(CacheUnavailable):
        store.prepare_export("api")
    report = store.verify(deep=True)
    assert report.sound
    with pytest.raises(CacheUnavailable, match="read-only"):
        store.gc()
    assert tree_snapshot(source) == before


def test_read_only_mount_of_an_empty_directory_is_an_empty_store(read_only_mount: tuple[Path, Path]) -> None:
    _, mount_point = read_only_mount
    store = Store.open(mount_point)
    assert not store.writable
    assert store.prepare_import("api") is None
    assert store.stats().bytes == 0
