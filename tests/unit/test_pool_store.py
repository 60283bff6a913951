"""store/pool.py: chainIDs, filling once from a verified blob, entry checks, the gc rule, verify, stats."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from composecache.store import Store, oci, pool_maintenance
from composecache.store import pool as store_pool
from composecache.store.layout import Layout
from composecache.store.pool import PoolLayer, PoolLayout, PoolProblem
from tests.unit.pool_fakes import Member, gzipped, layer_tar, sha

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="pool trees hold root-owned files")

# Measured on a real daemon (containerd 1.7): the snapshots' keys of a 3-layer image and its diffIDs.
BASE = "sha256:dc8e6bd82d8243f8018beaedf77cf74a4f700b409076e9b6ded3bb8d9c40e355"
MIDDLE_DIFF = "sha256:1497b0b8d8343999678ff14ef2b4311fc69b1be192118f9ce91ae026ebae3813"
MIDDLE_CHAIN = "sha256:cc0fc869f76f7851eb25eaa46e12c1578307d474d15cd133124d126fc2731c00"
TOP_DIFF = "sha256:c58438427b485393b493338aa2d23a8af382a08124ca497512921b7e55eee90d"
TOP_CHAIN = "sha256:177767f3387c006de436628806e8b0a6fec1bb4488e8398c143a91ebdc6bcb97"


def test_chain_ids_are_the_ones_containerd_names_snapshots_by() -> None:
    assert store_pool.chain_id(None, BASE) == BASE
    assert store_pool.chain_id(BASE, MIDDLE_DIFF) == MIDDLE_CHAIN
    assert store_pool.chain_id(MIDDLE_CHAIN, TOP_DIFF) == TOP_CHAIN
    with pytest.raises(ValueError, match="not a sha256 digest"):
        store_pool.chain_id(None, "sha256:../../etc")


def _descriptor(n: int) -> oci.Descriptor:
    return oci.Descriptor(f"sha256:{n:064x}", 10, "application/vnd.oci.image.layer.v1.tar+gzip")


def test_chains_from_a_cache_config_follow_parents_and_an_omitted_parent_is_zero() -> None:
    blobs = [_descriptor(1), _descriptor(2), _descriptor(3)]
    annotations = {blobs[0].digest: BASE, blobs[1].digest: MIDDLE_DIFF, blobs[2].digest: TOP_DIFF}
    # Layer 1's parent is 0: BuildKit omits it (omitempty).  Layer 2 is on layer 1.
    config = {"layers": [{"blob": blobs[0].digest, "parent": -1}, {"blob": blobs[1].digest},
                         {"blob": blobs[2].digest, "parent": 1}]}  # fmt: skip
    layers = store_pool.chains_from_cache_config(blobs, annotations, json.dumps(config).encode())
    assert [layer.chain_id for layer in layers] == [BASE, MIDDLE_CHAIN, TOP_CHAIN]
    assert [layer.parent for layer in layers] == [None, BASE, MIDDLE_CHAIN]
    assert layers[2].blob == blobs[2]


def test_chains_without_a_diff_id_or_with_a_cycle_are_left_out() -> None:
    blobs = [_descriptor(1), _descriptor(2), _descriptor(3)]
    annotations = {blobs[0].digest: BASE, blobs[2].digest: TOP_DIFF}  # no diffID for blob 2
    config = {"layers": [{"blob": blobs[0].digest, "parent": -1}, {"blob": blobs[1].digest, "parent": 0},
                         {"blob": blobs[2].digest, "parent": 1}, {"blob": blobs[0].digest, "parent": 3},
                         {"blob": "sha256:" + "f" * 64, "parent": -1}, "junk"]}  # fmt: skip
    layers = store_pool.chains_from_cache_config(blobs, annotations, json.dumps(config).encode())
    assert [layer.chain_id for layer in layers] == [BASE]
    with pytest.raises(oci.OciError):
        store_pool.chains_from_cache_config(blobs, annotations, b"not json")


# --- a store with real layer blobs ---------------------------------------------------------------


def _store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "cache", "default")


def _put_blob(layout: Layout, data: bytes) -> oci.Descriptor:
    digest = sha(data)
    path = layout.blob(digest[7:])
    path.write_bytes(data)
    os.chmod(path, 0o444)
    return oci.Descriptor(digest, len(data), "application/vnd.oci.image.layer.v1.tar+gzip")


def _layer(layout: Layout, members: list[Member], parent: PoolLayer | None = None) -> PoolLayer:
    raw = layer_tar(members)
    blob = _put_blob(layout, gzipped(raw))
    parent_chain = parent.chain_id if parent else None
    return PoolLayer(store_pool.chain_id(parent_chain, sha(raw)), sha(raw), parent_chain, blob)


@root_only
def test_fill_makes_a_sound_entry_once(tmp_path: Path) -> None:
    layout = _store(tmp_path).layout
    base = _layer(layout, [Member("etc/", "dir"), Member("etc/os", data=b"test\n")])
    top = _layer(layout, [Member("etc/.wh.os"), Member("app/run", data=b"run\n", mode=0o755)], base)
    for layer in (base, top):
        info = store_pool.fill_entry(layout, layer)
        assert info.chain_id == layer.chain_id and info.blob == layer.blob.digest
    pool = PoolLayout(layout)
    assert (pool.tree(base.hex) / "etc/os").read_bytes() == b"test\n"
    assert os.lstat(pool.tree(top.hex) / "etc/os").st_rdev == 0
    mtime = os.lstat(pool.entry(top.hex)).st_mtime_ns
    store_pool.fill_entry(layout, top)  # filled already: nothing is written again
    assert os.lstat(pool.entry(top.hex)).st_mtime_ns == mtime
    assert os.listdir(pool.staging) == []
    assert oct(os.lstat(pool.root).st_mode & 0o777) == "0o700"  # trees hold root's files: private
    assert store_pool.check_entry(pool, top).parent == base.chain_id


@root_only
def test_a_blob_that_does_not_match_its_digest_or_diff_id_fills_nothing(tmp_path: Path) -> None:
    layout = _store(tmp_path).layout
    good = _layer(layout, [Member("a", data=b"a")])
    wrong_diff = PoolLayer(store_pool.chain_id(None, MIDDLE_DIFF), MIDDLE_DIFF, None, good.blob)
    with pytest.raises(store_pool.FillRefused, match="diffID"):
        store_pool.fill_entry(layout, wrong_diff)
    corrupt = _layer(layout, [Member("b", data=b"b" * 1000)])
    path = layout.blob(corrupt.blob.hex)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-9] ^= 0xFF  # inside the gzip trailer's CRC: still the right size
    path.write_bytes(bytes(data))
    with pytest.raises(store_pool.FillRefused):
        store_pool.fill_entry(layout, corrupt)
    pool = PoolLayout(layout)
    assert os.listdir(pool.entries) == [] and os.listdir(pool.staging) == []


@root_only
def test_a_child_is_not_filled_before_its_parent(tmp_path: Path) -> None:
    layout = _store(tmp_path).layout
    base = _layer(layout, [Member("a", data=b"a")])
    top = _layer(layout, [Member("b", data=b"b")], base)
    with pytest.raises(store_pool.FillRefused, match="parent"):
        store_pool.fill_entry(layout, top)


@root_only
@pytest.mark.parametrize("damage", ["symlink entry", "symlink tree", "no entry.json", "bad entry.json",
                                    "other layer", "group writable", "no tree"])  # fmt: skip
def test_damaged_entries_are_never_used(tmp_path: Path, damage: str) -> None:
    layout = _store(tmp_path).layout
    layer = _layer(layout, [Member("a", data=b"a")])
    store_pool.fill_entry(layout, layer)
    pool = PoolLayout(layout)
    entry = pool.entry(layer.hex)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(entry, elsewhere, symlinks=True)
    if damage == "symlink entry":
        shutil.rmtree(entry)
        entry.symlink_to(elsewhere)
    elif damage == "symlink tree":
        shutil.rmtree(entry / "tree")
        (entry / "tree").symlink_to(elsewhere / "tree")
    elif damage == "no entry.json":
        (entry / "entry.json").unlink()
    elif damage == "bad entry.json":
        (entry / "entry.json").write_text("{not json")
    elif damage == "other layer":
        raw = json.loads((entry / "entry.json").read_text())
        raw["diff_id"] = MIDDLE_DIFF
        (entry / "entry.json").write_text(json.dumps(raw))
    elif damage == "group writable":
        os.chmod(entry / "tree", 0o775)
    elif damage == "no tree":
        shutil.rmtree(entry / "tree")
    with pytest.raises(PoolProblem) as problem:
        store_pool.check_entry(pool, layer)
    assert problem.value.kind in {store_pool.UNSAFE, store_pool.CORRUPT}
    moved = store_pool.quarantine_entry(pool, layer.hex, str(problem.value))
    assert moved is not None and moved.parent == pool.quarantine
    assert (elsewhere / "tree" / "a").read_bytes() == b"a"  # a planted link's target is never touched
    store_pool.fill_entry(layout, layer)  # repaired from its blob
    store_pool.check_entry(pool, layer)


def test_hostile_chain_ids_never_reach_a_path(tmp_path: Path) -> None:
    pool = PoolLayout(_store(tmp_path).layout)
    for bad in ("../../etc", "a" * 63, "A" * 64, "sha256:" + "a" * 64):
        with pytest.raises(PoolProblem):
            pool.entry(bad)


# --- gc -------------------------------------------------------------------------------------------


@root_only
def test_gc_keeps_trees_sessions_use_and_blobs_they_linked_even_with_grace_zero(tmp_path: Path) -> None:
    store = _store(tmp_path)
    layout = store.layout
    used = _layer(layout, [Member("used", data=b"u")])
    unused = _layer(layout, [Member("unused", data=b"n")])
    for layer in (used, unused):
        store_pool.fill_entry(layout, layer)
    pool = PoolLayout(layout)
    store_pool.record_use(pool, "a" * 24, [used.chain_id], [used.blob.digest])
    report = store.gc(grace_s=0)  # no scope references either blob: both are orphans
    assert report.pool.entries_removed == 1 and report.pool.entries_kept_in_use == 1
    assert os.path.isdir(pool.tree(used.hex)) and not os.path.lexists(pool.entry(unused.hex))
    assert layout.blob(used.blob.hex).exists()  # the session's daemon links it
    assert not layout.blob(unused.blob.hex).exists()
    assert os.listdir(pool.trash) == []
    # Once the record is older than the pool grace, the tree and the blob go too.
    old = time.time() - store_pool.POOL_GRACE_S - 60
    os.utime(pool.uses / f"{'a' * 24}.json", (old, old))
    report = store.gc(grace_s=0)
    assert report.pool.entries_removed == 1 and report.pool.records_expired == 1
    assert not os.path.lexists(pool.entry(used.hex)) and not layout.blob(used.blob.hex).exists()


@root_only
def test_gc_keeps_a_tree_while_its_blob_lives(tmp_path: Path) -> None:
    store = _store(tmp_path)
    layer = _layer(store.layout, [Member("x", data=b"x")])
    store_pool.fill_entry(store.layout, layer)
    report = store.gc(grace_s=3600)  # the orphan blob is within the grace: kept, and its tree with it
    assert report.pool.entries_removed == 0
    assert os.path.isdir(PoolLayout(store.layout).tree(layer.hex))


@root_only
def test_gc_keeps_a_tree_a_mounted_overlay_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    layer = _layer(store.layout, [Member("x", data=b"x")])
    store_pool.fill_entry(store.layout, layer)
    snapshot = tmp_path / "snapshots" / "1"
    snapshot.mkdir(parents=True)
    (snapshot / "fs").symlink_to(PoolLayout(store.layout).tree(layer.hex))
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"1 2 0:1 / /merged rw - overlay overlay rw,lowerdir={snapshot}/fs:/nowhere,"
                         f"upperdir=/u,workdir=/w\n")  # fmt: skip
    original = pool_maintenance.mounted_lower_dirs
    monkeypatch.setattr(pool_maintenance, "mounted_lower_dirs", lambda: original(mountinfo))
    report = store.gc(grace_s=0, pool_grace_s=0)
    assert report.pool.entries_kept_in_use == 1 and report.pool.entries_removed == 0


def test_mounted_lower_dirs_are_read_from_mountinfo(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
        f"90 22 0:50 / /m rw - overlay overlay rw,lowerdir={tmp_path}/link:/x/y,upperdir=/u,workdir=/w\n"
    )
    assert str(target) in pool_maintenance.mounted_lower_dirs(mountinfo)
    assert pool_maintenance.mounted_lower_dirs(tmp_path / "missing") == set()


@root_only
def test_gc_reclaims_staging_of_a_killed_fill(tmp_path: Path) -> None:
    store = _store(tmp_path)
    pool = PoolLayout(store.layout)
    store_pool.create_pool_dirs(pool)
    dead = pool.staging / f"{'b' * 64}.0badc0de"
    (dead / "tree").mkdir(parents=True)
    (pool.locks / f"{'b' * 64}.lock").write_bytes(b"")
    assert store.gc(grace_s=0).pool.staging_reclaimed == 1
    assert not dead.exists()


# --- verify and stats ---------------------------------------------------------------------------


@root_only
@pytest.mark.parametrize("change", ["content", "mode", "extra file", "missing file"])
def test_deep_verify_finds_a_tree_that_differs_from_its_blob(tmp_path: Path, change: str) -> None:
    store = _store(tmp_path)
    layer = _layer(store.layout, [Member("d/", "dir"), Member("d/f", data=b"original"), Member("g", data=b"g")])
    store_pool.fill_entry(store.layout, layer)
    assert store.verify(deep=True).sound
    tree = PoolLayout(store.layout).tree(layer.hex)
    if change == "content":
        (tree / "d/f").write_bytes(b"poisoned")  # same size
    elif change == "mode":
        os.chmod(tree / "g", 0o4755)
    elif change == "extra file":
        (tree / "d/planted").write_bytes(b"")
    else:
        (tree / "g").unlink()
    assert store.verify(deep=False).sound  # a shallow look cannot see inside a tree
    report = store.verify(deep=True)
    assert not report.sound
    assert [p.kind for p in report.problems] == ["pool corrupt"]
    assert not os.path.lexists(PoolLayout(store.layout).entry(layer.hex))  # moved aside
    assert store.verify(deep=True).sound


@root_only
def test_shallow_verify_and_stats_count_the_pool(tmp_path: Path) -> None:
    store = _store(tmp_path)
    layer = _layer(store.layout, [Member("a", data=b"abc"), Member("b", data=b"de")])
    store_pool.fill_entry(store.layout, layer)
    store_pool.record_use(PoolLayout(store.layout), "c" * 24, [layer.chain_id], [])
    stats = store.stats().to_json()["pool"]
    assert stats == {"entries": 1, "bytes": 5, "files": 2, "broken": 0, "sessions": 1, "quarantined": 0}
    (PoolLayout(store.layout).entry(layer.hex) / "entry.json").write_text("[]")
    report = store.verify()
    assert [(p.digest, p.kind) for p in report.problems] == [(layer.chain_id, "pool corrupt")]
    assert store.stats().to_json()["pool"]["quarantined"] == 1


def test_each_namespace_has_its_own_pool(tmp_path: Path) -> None:
    one = PoolLayout(Store.open(tmp_path / "cache", "team-a").layout)
    two = PoolLayout(Store.open(tmp_path / "cache", "team-b").layout)
    assert one.root != two.root
    assert one.root.parent.parent == two.root.parent.parent == tmp_path / "cache" / "ns"


def test_the_pool_switch() -> None:
    assert store_pool.enabled({})
    assert store_pool.enabled({"COMPOSECACHE_POOL": "1"})
    assert not store_pool.enabled({"COMPOSECACHE_POOL": "0"})
    assert not store_pool.enabled({"COMPOSECACHE_POOL": "off"})
