"""session/pool.py against a fake `ctr` that keeps snapshots like containerd's overlayfs snapshotter."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from composecache.errors import StrictFallback
from composecache.output import Output
from composecache.session import pool as session_pool
from composecache.session import seeding
from composecache.store import Store, pool_maintenance
from composecache.store import pool as store_pool
from composecache.store.pool import PoolLayout
from tests.unit.pool_fakes import Member, gzipped, layer_tar, sha
from tests.unit.store_fakes import CACHECONFIG, INDEX, descriptor_json, write_blob

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="registration needs root")

FAKE_CTR = r"""#!{python}
import fcntl, json, os, sys
state_path = os.environ["FAKE_CTR_STATE"]
lock = open(state_path + ".lock", "a")
fcntl.flock(lock, fcntl.LOCK_EX)  # composecache calls ctr from several threads; containerd serialises too
root = os.environ["FAKE_SNAPSHOTTER_ROOT"]
args = sys.argv[1:]
words = [a for a in args[4:] if a not in ("--snapshotter", "overlayfs", "--mounts")]
state = json.load(open(state_path)) if os.path.exists(state_path) else {{"snapshots": {{}}, "n": 0, "calls": []}}
state["calls"].append(words)
fail = os.environ.get("FAKE_CTR_FAIL", "")
def save():
    json.dump(state, open(state_path, "w"))
if fail and fail in " ".join(words[:2]):
    save(); sys.stderr.write("ctr: simulated failure\n"); sys.exit(1)
snaps = state["snapshots"]
if words[:2] == ["snapshots", "ls"]:
    print("KEY PARENT KIND")
    for key, snap in snaps.items():
        print(key, snap["parent"] or "", snap["kind"])
elif words[:2] == ["snapshots", "prepare"]:
    key, parent = words[2], (words[3] if len(words) > 3 else None)
    top = os.path.join(root, "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    fs = os.path.join(top, str(len(os.listdir(top)) + 1 if os.path.isdir(top) else 1), "fs")
    os.makedirs(fs)
    snaps[key] = {{"parent": parent, "kind": "Active", "fs": fs, "labels": {{"containerd.io/gc.root": "now"}}}}
    if parent is None:
        print(json.dumps([{{"Type": "bind", "Source": fs, "Options": ["rw", "rbind"]}}]))
    else:
        print(json.dumps([{{"Type": "overlay", "Source": "overlay",
                           "Options": ["workdir=/w", "upperdir=" + fs, "lowerdir=" + snaps[parent]["fs"]]}}]))
elif words[:2] == ["snapshots", "commit"]:
    name, key = words[2], words[3]
    snaps[name] = dict(snaps.pop(key), kind="Committed")
elif words[:2] == ["snapshots", "rm"]:
    for key in words[2:]:
        snaps.pop(key, None)
elif words[:2] == ["snapshots", "label"]:
    for label in words[3:]:
        k, _, v = label.partition("=")
        if v:
            snaps[words[2]]["labels"][k] = v
        else:
            snaps[words[2]]["labels"].pop(k, None)
elif words[:2] == ["content", "ingest"]:
    sys.stdin.buffer.read()
elif words[:2] == ["content", "ls"]:
    print("DIGEST\tSIZE\tAGE\tLABELS")
save()
"""


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> seeding.DaemonStore:
    ctr = tmp_path / "bin" / "ctr"
    ctr.parent.mkdir()
    ctr.write_text(FAKE_CTR.format(python=sys.executable))
    ctr.chmod(0o755)
    monkeypatch.setenv("FAKE_CTR_STATE", str(tmp_path / "ctr.json"))
    monkeypatch.setenv("FAKE_SNAPSHOTTER_ROOT", str(tmp_path / "daemon"))
    monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)
    blobs = tmp_path / "daemon" / seeding.CONTENT_DIR / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    return seeding.DaemonStore(address=tmp_path / "containerd.sock", namespace="moby", ctr=ctr,
                               content_blobs=blobs, snapshotter="overlayfs")  # fmt: skip


def ctr_state(tmp_path: Path) -> Any:
    return json.loads((tmp_path / "ctr.json").read_text())


def save_ctr_state(tmp_path: Path, state: Any) -> None:
    """What the daemon did meanwhile (a prune, its gc), as the fake ctr will see it."""
    (tmp_path / "ctr.json").write_text(json.dumps(state))


def publish_image(store: Store, scope: str, layers: list[list[Member]]) -> str:
    """Publish a cache like BuildKit's: gzipped layers, each on the previous one, with their diffIDs."""
    staging = store.prepare_export(scope)
    descriptors, diff_ids = [], []
    for members in layers:
        raw = layer_tar(members)
        descriptors.append(write_blob(staging.path, gzipped(raw)))
        diff_ids.append(sha(raw))
    config = {"layers": [{"blob": d.digest, "parent": i - 1} for i, d in enumerate(descriptors)], "records": []}
    config_desc = write_blob(staging.path, json.dumps(config).encode(), CACHECONFIG)
    entries = [{**descriptor_json(d), "annotations": {session_pool.UNCOMPRESSED: diff_id}}
               for d, diff_id in zip(descriptors, diff_ids, strict=True)]  # fmt: skip
    manifest = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [*entries, descriptor_json(config_desc)]}
    manifest_desc = write_blob(staging.path, json.dumps(manifest).encode(), INDEX)
    tagged = {**descriptor_json(manifest_desc), "annotations": {"org.opencontainers.image.ref.name": "latest"}}
    index = {"schemaVersion": 2, "manifests": [tagged]}
    (staging.path / "index.json").write_text(json.dumps(index))
    assert store.publish(staging).published
    return manifest_desc.digest


IMAGE = [[Member("etc/", "dir"), Member("etc/os", data=b"base\n")], [Member("app/run", data=b"x" * 5000)],
         [Member("etc/.wh.os")]]  # fmt: skip


def _output() -> tuple[Output, io.StringIO]:
    stream = io.StringIO()
    return Output(verbose=1, stream=stream), stream


def _prepare(store: Store, manifest: str, daemon: seeding.DaemonStore, output: Output,
             memo_dir: Path | None = None) -> session_pool.Prepared:  # fmt: skip
    """One build's registration (fill=True), in this session or, with `memo_dir`, in another one."""
    env = {**os.environ, **({"COMPOSECACHE_MEMO_DIR": str(memo_dir)} if memo_dir else {})}
    prepared = session_pool.prepare_daemon(store.layout, [manifest], daemon, env, output, fill=True)
    assert prepared is not None and prepared.registrar is not None
    return prepared


@pytest.fixture
def published(tmp_path: Path) -> tuple[Store, str]:
    """A store in tmp_path with IMAGE's cache published (scope proj/app), and its manifest digest."""
    store = Store.open(tmp_path / "cache", "default")
    return store, publish_image(store, "proj/app", IMAGE)


@root_only
def test_registration_points_each_chain_snapshot_at_the_pool_and_links_blobs(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    output, stream = _output()
    prepared = _prepare(store, manifest, daemon, output)
    assert prepared.registrar is not None
    report = prepared.registrar.report
    assert (report.layers, report.registered, report.filled, report.linked) == (3, 3, 3, 3), stream.getvalue()
    assert "warning" not in stream.getvalue()
    state = ctr_state(tmp_path)
    snaps = state["snapshots"]
    assert isinstance(snaps, dict)
    layers = session_pool.layers_of_manifests(store.layout, [manifest])
    pool = PoolLayout(store.layout)
    for layer in layers:
        snap = snaps[layer.chain_id]
        assert snap["parent"] == layer.parent and snap["kind"] == "Committed"
        assert os.readlink(snap["fs"]) == str(pool.tree(layer.hex))
        assert daemon.content_blobs is not None
        link = daemon.content_blobs / layer.blob.hex
        assert os.readlink(link) == str(store.layout.blob(layer.blob.hex))
    records = pool_maintenance.use_records(store.layout, 1e12 - 1, 1e12)
    assert records.entries == {layer.chain_id for layer in layers}
    prepared.release()
    snaps = ctr_state(tmp_path)["snapshots"]
    assert isinstance(snaps, dict)
    assert all("containerd.io/gc.root" not in snap["labels"] for snap in snaps.values())  # images pin them now
    # A second session (its own daemon state, its own memo) registers without filling again.
    (tmp_path / "ctr.json").unlink()
    again = _prepare(store, manifest, daemon, output, memo_dir=tmp_path / "memo-of-another-session")
    assert again.registrar is not None
    assert (again.registrar.report.filled, again.registrar.report.registered) == (0, 3)  # filled once, ever
    again.release()


@root_only
def test_what_the_daemon_collected_after_a_build_is_not_registered_again_in_that_session(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    output, stream = _output()
    first = _prepare(store, manifest, daemon, output)
    assert first.registrar is not None and first.registrar.report.registered == 3
    first.release()
    state = ctr_state(tmp_path)
    top_layer = session_pool.layers_of_manifests(store.layout, [manifest])[-1]
    top = top_layer.chain_id
    del state["snapshots"][top]  # no image used the top layer (a builder stage's): the daemon's gc took it
    save_ctr_state(tmp_path, state)
    assert daemon.content_blobs is not None
    (daemon.content_blobs / top_layer.blob.hex).unlink()  # and its blob
    again = _prepare(store, manifest, daemon, output)
    assert again.registrar is not None
    report = again.registrar.report
    assert (report.registered, report.present, report.dropped) == (0, 2, 1), report.summary()
    assert again.registrar.root is None, "nothing to pin: the fast path"
    assert again.seeder is None or again.seeder.report.seeded == 0, "nor is its blob copied in again"
    assert not (daemon.content_blobs / top_layer.blob.hex).exists()
    again.release()
    assert top not in ctr_state(tmp_path)["snapshots"]
    other = _prepare(store, manifest, daemon, output, memo_dir=tmp_path / "another-session")  # registers it
    assert other.registrar is not None and other.registrar.report.registered == 1
    other.release()
    assert "warning" not in stream.getvalue()


@root_only
def test_a_read_only_consumer_never_fills(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    output, stream = _output()
    prepared = session_pool.prepare_daemon(store.layout, [manifest], daemon, {**os.environ}, output, fill=False)
    assert prepared is not None
    assert not os.path.exists(PoolLayout(store.layout).root)
    assert "warning" not in stream.getvalue()  # an unfilled pool is no fault: the layers extract as before
    assert "0 of 3 layers registered (0 already there, 1 not in the read-only pool)" in stream.getvalue()
    prepared.release()


@root_only
@pytest.mark.parametrize(("fault", "expected"), [("snapshots prepare", "ctr snapshots prepare"),
                                                 ("snapshots commit", "ctr snapshots commit"),
                                                 ("snapshots ls", "ctr snapshots ls failed"),
                                                 ("content label", "ctr content label failed")])  # fmt: skip
def test_a_failing_ctr_is_one_line_and_the_normal_path(
    tmp_path: Path,
    daemon: seeding.DaemonStore,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    expected: str,
    published: tuple[Store, str],
) -> None:
    store, manifest = published
    monkeypatch.setenv("FAKE_CTR_FAIL", fault)
    output, stream = _output()
    prepared = session_pool.prepare_daemon(store.layout, [manifest], daemon, {**os.environ}, output, fill=True)
    warnings = [line for line in stream.getvalue().splitlines() if "warning" in line]
    assert len(warnings) == 1 and expected in warnings[0], stream.getvalue()
    if prepared is not None:
        prepared.release()
    snaps = ctr_state(tmp_path)["snapshots"]
    assert isinstance(snaps, dict)
    assert not [key for key in snaps if key.startswith(session_pool.TEMP_KEY_PREFIX)]  # no half registration left


def test_other_snapshotters_and_the_off_switch(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    native = seeding.DaemonStore(daemon.address, daemon.namespace, daemon.ctr, daemon.content_blobs, "native")
    output, stream = _output()
    session_pool.prepare_daemon(store.layout, [manifest], native, {**os.environ}, output, fill=True)
    assert "snapshotter is native, not overlayfs" in stream.getvalue()
    output, stream = _output()
    session_pool.prepare_daemon(store.layout, [manifest], daemon, {**os.environ, "COMPOSECACHE_POOL": "0"},
                                output, fill=True)  # fmt: skip
    assert "warning" not in stream.getvalue()
    calls = ctr_state(tmp_path)["calls"] if (tmp_path / "ctr.json").exists() else []
    assert isinstance(calls, list)
    assert not [c for c in calls if c[:1] == ["snapshots"]]


def test_strict_mode_raises_instead_of_falling_back(
    tmp_path: Path, daemon: seeding.DaemonStore, monkeypatch: pytest.MonkeyPatch, published: tuple[Store, str]
) -> None:
    store, manifest = published
    native = seeding.DaemonStore(daemon.address, daemon.namespace, daemon.ctr, daemon.content_blobs, "native")
    monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    with pytest.raises(StrictFallback):
        session_pool.prepare_daemon(store.layout, [manifest], native, {**os.environ}, _output()[0], fill=True)


def test_the_new_snapshot_directory_is_read_from_ctr_mounts() -> None:
    base = "/d/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs"
    bind = json.dumps([{"Type": "bind", "Source": base, "Options": ["rw", "rbind"]}])
    overlay = json.dumps([{"Type": "overlay", "Source": "overlay",
                           "Options": ["index=off", "workdir=/w", f"upperdir={base}", "lowerdir=/l"]}])  # fmt: skip
    assert str(session_pool._snapshot_fs_dir(bind)) == base
    assert str(session_pool._snapshot_fs_dir(overlay)) == base
    native = "/x/io.containerd.snapshotter.v1.native/snapshots/1/fs"
    for bad in ("not json", "[]", json.dumps([{"Type": "bind", "Source": "/etc"}]),
                json.dumps([{"Type": "bind", "Source": native}])):  # fmt: skip
        assert session_pool._snapshot_fs_dir(bad) is None


@root_only
def test_what_a_killed_registration_left_is_removed_by_the_next_one(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    dead_pid = 2**22 + 1  # above pid_max's default: no such process
    state = {"snapshots": {f"{session_pool.TEMP_KEY_PREFIX}{dead_pid}-0a0b0c": {"parent": None, "kind": "Active",
                                                                               "fs": "/nowhere", "labels": {}},
                           f"{session_pool.TEMP_KEY_PREFIX}{os.getpid()}-0d0e0f": {"parent": None, "kind": "Active",
                                                                                  "fs": "/nowhere", "labels": {}}},
             "calls": []}  # fmt: skip
    save_ctr_state(tmp_path, state)
    output, stream = _output()
    prepared = session_pool.prepare_daemon(store.layout, [manifest], daemon, {**os.environ}, output, fill=True)
    assert prepared is not None
    prepared.release()
    keys = set(ctr_state(tmp_path)["snapshots"])
    assert f"{session_pool.TEMP_KEY_PREFIX}{dead_pid}-0a0b0c" not in keys  # its owner is gone
    assert f"{session_pool.TEMP_KEY_PREFIX}{os.getpid()}-0d0e0f" in keys  # a live registration's: left alone
    assert "warning" not in stream.getvalue()


@root_only
def test_a_layer_the_daemon_extracted_itself_is_filled_when_a_child_needs_it(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    base = session_pool.layers_of_manifests(store.layout, [manifest])[0]
    state = {"snapshots": {base.chain_id: {"parent": None, "kind": "Committed", "fs": "/x", "labels": {}}}, "calls": []}
    save_ctr_state(tmp_path, state)
    output, stream = _output()
    prepared = session_pool.prepare_daemon(store.layout, [manifest], daemon, {**os.environ}, output, fill=True)
    assert prepared is not None and prepared.registrar is not None
    report = prepared.registrar.report
    assert (report.present, report.registered, report.filled) == (1, 2, 3), stream.getvalue()
    assert "warning" not in stream.getvalue()
    assert ctr_state(tmp_path)["snapshots"][base.chain_id]["fs"] == "/x"  # left as it was
    prepared.release()


def test_not_root_is_one_line_and_the_normal_path(
    tmp_path: Path, daemon: seeding.DaemonStore, monkeypatch: pytest.MonkeyPatch, published: tuple[Store, str]
) -> None:
    store, manifest = published
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    output, stream = _output()
    session_pool.prepare_daemon(store.layout, [manifest], daemon, {**os.environ}, output, fill=True)
    warnings = [line for line in stream.getvalue().splitlines() if "warning" in line]
    assert len(warnings) == 1 and "needs root" in warnings[0], stream.getvalue()
    assert not (tmp_path / "ctr.json").exists()  # not one ctr call


@root_only
def test_cache_fill_unpacks_every_scope_ahead_of_time(tmp_path: Path, published: tuple[Store, str]) -> None:
    from composecache.commands import cache as cache_command
    from composecache.settings import Settings

    store, manifest = published
    report = pool_maintenance.fill_scopes(store.layout, [manifest])
    assert (report.layers, report.filled, report.present, report.refused) == (3, 3, 0, [])
    assert report.bytes == len(b"base\n") + 5000
    again = pool_maintenance.fill_scopes(store.layout, [manifest])
    assert (again.filled, again.present) == (0, 3)
    for layer in session_pool.layers_of_manifests(store.layout, [manifest]):
        store_pool.check_entry(PoolLayout(store.layout), layer)
    output, stream = _output()
    settings = Settings(cache_dir=tmp_path / "cache")
    assert cache_command.main(["fill", "proj/app"], settings, output) == 0
    assert cache_command.main(["fill", "no/such"], settings, output) == 1
    assert "no cache scope 'no/such'" in stream.getvalue()


@root_only
def test_a_pruned_session_registers_everything_again(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    output, _ = _output()
    _prepare(store, manifest, daemon, output).release()
    state = ctr_state(tmp_path)
    state["snapshots"] = {}  # docker system prune -a: every snapshot gone
    save_ctr_state(tmp_path, state)
    again = _prepare(store, manifest, daemon, output)
    assert again.registrar is not None
    assert (again.registrar.report.registered, again.registrar.report.dropped) == (3, 0)
    again.release()


@root_only
def test_in_the_session_that_built_the_images_a_collected_builder_layer_is_not_a_prune(
    tmp_path: Path, daemon: seeding.DaemonStore, published: tuple[Store, str]
) -> None:
    store, manifest = published
    output, _ = _output()
    _prepare(store, manifest, daemon, output, memo_dir=tmp_path / "builder").release()  # the images' chains

    def collect_top() -> None:  # the daemon's gc takes the one chain no image holds
        state = ctr_state(tmp_path)
        del state["snapshots"][session_pool.layers_of_manifests(store.layout, [manifest])[-1].chain_id]
        save_ctr_state(tmp_path, state)

    collect_top()
    first = _prepare(store, manifest, daemon, output)  # this session registers only the top
    assert first.registrar is not None and first.registrar.report.registered == 1
    first.release()
    collect_top()  # all it registered is gone, but the images' chains are not: no prune
    again = _prepare(store, manifest, daemon, output)
    assert again.registrar is not None
    assert (again.registrar.report.registered, again.registrar.report.dropped) == (0, 1)
    again.release()
