"""Issue 6, fault suite: a build never fails because of the cache, and nothing is lost.

One test per fault row (docs/security.md has the table of rows and outcomes; keep the
two in step).  Every test asserts the three things the issue asks for:

1. the user's build exits as it would without composecache (where that is not simply "it
   succeeds", the plain command runs in a comparable session and the exit codes are compared);
2. `composecache cache verify` passes afterwards, or reports exactly the damage the test made
   and quarantines it (and then passes);
3. nothing is left behind: no staging directory (killed processes' staging only until gc), no
   override directory, no mount (the `lab` fixture), no daemon (the `sessions` fixture).

Root bypasses file permissions, so "unwritable" is made with what stops root too: a cache path
whose parent is a regular file (ENOTDIR), the immutable attribute (chattr +i: EPERM) and a
read-only bind mount (EROFS).  EACCES, what a non-root user meets, takes the same code path
as EPERM (composecache/store/safefs.py NOT_WRITABLE).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from composecache.store import Store
from tests.e2e import harness
from tests.e2e.faultkit import (
    SCOPE,
    Lab,
    blob_path,
    changed,
    copy_store,
    immutable,
    layer_descriptors,
    manifest_of,
    no_git_scope,
    python_composecache,
    read_only_bind,
    scope_dirs,
    staging_leftovers,
    store_root,
    summary,
    tmpfs,
    tree_state,
    warnings,
)

# Faults: these tests check the fail-open path itself (one warning, then a normal build).
pytestmark = pytest.mark.fail_open

PLAIN = ("--progress", "plain")


def _fully_cached(result: harness.Result) -> None:
    assert result.returncode == 0, result.report
    harness.assert_all_run_steps_cached(result.output, at_least=2)


def _single_warning(result: harness.Result, *needles: str) -> str:
    found = warnings(result)
    assert len(found) == 1, result.stderr
    for needle in needles:
        assert needle in found[0], found[0]
    return found[0]


# --- the cache directory: missing, unwritable, read-only, full ---------------------------------------


def test_missing_cache_dir_is_created_and_used(lab: Lab, shared: harness.Session) -> None:
    lab.cache_dir = lab.tmp / "not" / "there" / "yet"
    result = lab.cc(shared, "-p", "m", "build", "app")
    assert result.returncode == 0, result.report
    assert warnings(result) == []
    assert summary(result)["app"].endswith("; exported")
    assert oct(os.stat(lab.cache_dir).st_mode & 0o7777) == oct(0o2775)
    lab.assert_sound(shared)


def test_cache_dir_removed_during_the_build(lab: Lab, sessions: harness.Sessions) -> None:
    """The whole store disappears while a build exports into it (an operator's rm -rf)."""
    session = sessions.start()
    env = session.env()
    env.update(lab.env(), BUILDKIT_PROGRESS="plain")
    argv = [sys.executable, "-m", "composecache", "-p", "r", "--profile", "slow", "build", "slow"]
    proc = subprocess.Popen(argv, cwd=lab.project(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip

    def reserved() -> bool:  # `slow` is the last service reserved: the build is about to start
        prefix = no_git_scope("faults", "slow", "slow").replace("/", "_") + "-"
        return any(p.name.startswith(prefix) and p.is_dir() for p in staging_leftovers(lab.cache_dir))

    try:
        deadline = time.monotonic() + 120
        while not reserved() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reserved(), "the build never reserved its staging directory"
        subprocess.run(["rm", "-rf", str(lab.cache_dir)], check=True)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = harness.Result(proc.returncode, out, err)
    assert result.returncode == 0, result.report
    _single_warning(result, "slow: cache export not published")
    lab.assert_sound(session)  # opening the store again re-creates what is missing


@pytest.mark.parametrize("how", ["parent-is-a-file", "immutable-empty-dir", "immutable-populated-store"])
def test_unwritable_cache_dir(how: str, lab: Lab, sessions: harness.Sessions, template: Path) -> None:
    session = sessions.start()
    if how == "parent-is-a-file":
        (lab.tmp / "a-file").write_text("not a directory\n")
        lab.cache_dir = lab.tmp / "a-file" / "cache"
        result = lab.cc(session, "-p", "u", "build", "app")
        assert result.returncode == 0, result.report
        _single_warning(result, "cache unavailable", "building without it")
        assert summary(result)["app"].endswith("not exported (cache unavailable)")
        assert (lab.tmp / "a-file").read_text() == "not a directory\n"
        return
    if how == "immutable-populated-store":
        copy_store(template, lab.cache_dir)
    before = tree_state(lab.cache_dir)
    with immutable(lab.cache_dir, recursive=True):
        result = lab.cc(session, "-p", "u", *PLAIN, "build", "app")
        after = tree_state(lab.cache_dir)
        code, report = lab.verify(session)
    assert result.returncode == 0, result.report
    _single_warning(result, "not writable: import only")
    if how == "immutable-populated-store":
        _fully_cached(result)
        assert summary(result)["app"].startswith(f"scope {SCOPE}: import from {SCOPE}")
    assert changed(before, after) == []
    assert code == 0 and report["sound"], report


def test_read_only_mount_imports_and_changes_nothing(lab: Lab, sessions: harness.Sessions, template: Path) -> None:
    copy_store(template, lab.cache_dir)
    before = tree_state(lab.cache_dir)
    session = sessions.start()
    with read_only_bind(lab.cache_dir):
        result = lab.cc(session, "-p", "ro", *PLAIN, "build", "app")
        code, report = lab.verify(session, deep=True)
    _fully_cached(result)
    _single_warning(result, "not writable: import only")
    assert summary(result)["app"] == f"scope {SCOPE}: import from {SCOPE}; not exported (cache not writable)"
    assert changed(before, tree_state(lab.cache_dir)) == []
    assert code == 0 and report["sound"], report


def test_full_disk_during_export(lab: Lab, sessions: harness.Sessions) -> None:
    """A 400 KB filesystem: the store fits, the 1 MB busybox layer does not (ENOSPC mid-export)."""
    session = sessions.start()
    with tmpfs(lab.tmp / "tiny", "400k") as tiny:
        lab.cache_dir = tiny / "cache"
        result = lab.cc(session, "-p", "full", "build", "app")
        assert result.returncode == 0, result.report
        assert "no space left on device" in result.output
        _single_warning(result, "app", "export")
        assert staging_leftovers(lab.cache_dir) == []
        assert scope_dirs(lab.cache_dir) == []  # nothing half-published
        lab.assert_sound(session)
        lab.cache_dir = lab.tmp / "shared-cache"  # the tmpfs is gone after this block


# --- damaged store contents --------------------------------------------------------------------------

INDEX_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda data: data[: len(data) // 2],
    "not-json": lambda data: b"\x00\xffnot json at all\n",
    "json-without-manifests": lambda data: b'{"schemaVersion": 2}',
}


@pytest.mark.parametrize("damage", sorted(INDEX_DAMAGE))
def test_damaged_index(damage: str, lab: Lab, sessions: harness.Sessions, template: Path) -> None:
    session = sessions.start()
    # verify reports exactly this damage, quarantines it, and is then satisfied
    reported = copy_store(template, lab.tmp / "reported")
    index = scope_dirs(reported)[0] / "index.json"
    index.write_bytes(INDEX_DAMAGE[damage](index.read_bytes()))
    code, report = lab.verify(session, cache_dir=reported)
    assert code == 1
    assert [(p["scope"], p["kind"]) for p in report["problems"]] == [(SCOPE, "unparseable-index")], report
    assert len(report["quarantined_now"]) == 1
    assert lab.verify(session, cache_dir=reported)[0] == 0
    assert scope_dirs(reported) == []

    # a build meets the damage first: one warning, a cold build, and a fresh export heals the scope
    copy_store(template, lab.cache_dir)
    index = scope_dirs(lab.cache_dir)[0] / "index.json"
    index.write_bytes(INDEX_DAMAGE[damage](index.read_bytes()))
    result = lab.cc(session, "-p", "d", "build", "app")
    assert result.returncode == 0, result.report
    _single_warning(result, "corrupt", "quarantine")
    assert summary(result)["app"] == f"scope {SCOPE}: cold (nothing to import); exported"
    lab.assert_sound(session)
    assert Store.open(lab.cache_dir).peek_import(SCOPE) is not None


def _largest_layer(cache_dir: Path) -> str:
    _, manifest = manifest_of(scope_dirs(cache_dir)[0])
    return str(max(layer_descriptors(manifest), key=lambda d: d["size"])["digest"])


def _damage_blob(cache_dir: Path, damage: str) -> str:
    """Damage one blob of the store's only scope; returns its digest."""
    if damage == "missing-manifest":
        hex_digest, _ = manifest_of(scope_dirs(cache_dir)[0])
        digest = f"sha256:{hex_digest}"
    else:
        digest = _largest_layer(cache_dir)
    path = blob_path(cache_dir, digest)
    data = path.read_bytes()
    os.chmod(path, 0o644)
    if damage == "truncated-layer":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "wrong-content-layer":  # same size, other bytes: what a disk or a bad copy does
        path.write_bytes(bytes(b ^ 0x5A if i % 4099 == 100 else b for i, b in enumerate(data)))
    else:
        path.unlink()
    return digest


BLOB_DAMAGE = {  # damage -> what verify reports (deep: wrong content is only seen by re-hashing)
    "truncated-layer": "wrong-size",
    "wrong-content-layer": "wrong-digest",
    "missing-layer": "missing-blob",
    "missing-manifest": "missing-blob",
}


@pytest.mark.parametrize("damage", sorted(BLOB_DAMAGE))
def test_damaged_blob(damage: str, lab: Lab, sessions: harness.Sessions, template: Path) -> None:
    session = sessions.start()
    reported = copy_store(template, lab.tmp / "reported")
    digest = _damage_blob(reported, damage)
    code, report = lab.verify(session, deep=True, cache_dir=reported)
    assert code == 1
    assert {(p["scope"], p["kind"], p["digest"]) for p in report["problems"]} == {(SCOPE, BLOB_DAMAGE[damage], digest)}
    assert report["quarantined_now"], report
    lab.assert_sound(session, cache_dir=reported)
    assert not blob_path(reported, digest).exists() or damage.startswith("missing"), "the bad blob is out of the way"

    copy_store(template, lab.cache_dir)
    _damage_blob(lab.cache_dir, damage)
    result = lab.cc(session, "-p", "b", "build", "app")
    assert result.returncode == 0, result.report  # without composecache: 0
    # one warning; seeding the daemon and the layer pool (optimisations) may add a line each when they meet the blob
    optimisations = ("composecache: warning: seeding:", "composecache: warning: pool:")
    assert len([w for w in warnings(result) if not w.startswith(optimisations)]) == 1, result.stderr
    assert "quarantine" in result.stderr
    assert summary(result)["app"].endswith("; exported"), result.stderr
    lab.assert_sound(session)
    # the session itself is not poisoned: the plain command still builds there
    assert lab.plain(session, "-p", "plain-after", "build", "app").returncode == 0
    # healed: a new session imports every step (the damaged blob was written again, not skipped)
    fresh = sessions.start()
    _fully_cached(lab.cc(fresh, "-p", "again", *PLAIN, "build", "app"))


# --- killed processes ----------------------------------------------------------------------------------


def test_staging_left_by_a_build_killed_mid_export(lab: Lab, sessions: harness.Sessions) -> None:
    """SIGKILL to composecache, compose and buildx while a 32 MB layer is being written to staging."""
    lab.override_dir_may_remain = True  # a killed process cannot remove it (private, 0700: checked)
    session = sessions.start()
    env = session.env()
    env.update(lab.env(), BUILDKIT_PROGRESS="plain")
    argv = [sys.executable, "-m", "composecache", "-p", "k", "--profile", "slow", "build", "slow"]
    proc = subprocess.Popen(argv, cwd=lab.project(), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    partial: list[Path] = []
    try:
        deadline = time.monotonic() + 180
        while not partial and proc.poll() is None and time.monotonic() < deadline:
            partial = [p for s in staging_leftovers(lab.cache_dir) if s.is_dir()
                       for p in s.glob("ingest/*/data") if p.stat().st_size >= 1 << 20]  # fmt: skip
            time.sleep(0.02)
        assert partial, "never saw a partly written blob in staging"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    dead = [p for p in staging_leftovers(lab.cache_dir) if p.is_dir()]
    assert dead

    # the store is sound (a blob reaches blobs/ only whole, by rename) and says what is left over
    lab.assert_sound(session)
    stats = json.loads(lab.cache(session, "stats", "--json").stdout)
    assert stats["staging"] == {"live": 0, "dead": len(dead)}
    # the next build in a fresh session is unaffected, and never publishes the dead staging
    fresh = sessions.start()
    result = lab.cc(fresh, "-p", "n", "--profile", "slow", "build", "slow")
    assert result.returncode == 0, result.report
    assert warnings(result) == []
    assert summary(result)["slow"].endswith("; exported")
    gc = json.loads(lab.cache(fresh, "gc", "--json").stdout)
    assert gc["staging_reclaimed"] == len(dead), gc
    assert staging_leftovers(lab.cache_dir) == []
    lab.assert_sound(fresh)


KILL_POINTS = {
    # where composecache dies during publish -> what the scope looks like afterwards
    "after-creating-the-scope-dir": "empty",
    "after-writing-the-temporary-index": "empty",
    "after-replacing-the-index": "published",
}
KILL_HOOK = """
import os, signal
from composecache.store import scopes, safefs
point = os.environ["KILL_POINT"]
if point == "after-creating-the-scope-dir":
    original = scopes.ensure_scope_dir
    def ensure_scope_dir(layout, scope_dir):
        original(layout, scope_dir)
        os.kill(os.getpid(), signal.SIGKILL)
    scopes.ensure_scope_dir = ensure_scope_dir
elif point == "after-writing-the-temporary-index":
    def write_index(scope_dir, manifest):
        tmp = scope_dir / ".index.json.0123456789ab.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
        os.write(fd, scopes.oci.scope_index_json(manifest))
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    scopes.write_index = write_index
else:
    original_index = scopes.write_index
    def write_index(scope_dir, manifest):
        original_index(scope_dir, manifest)
        os.kill(os.getpid(), signal.SIGKILL)
    scopes.write_index = write_index
"""


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_composecache_killed_during_publish(point: str, lab: Lab, sessions: harness.Sessions) -> None:
    lab.override_dir_may_remain = True
    session = sessions.start()
    env = {**lab.env(), "KILL_POINT": point}
    killed = python_composecache(session, env, KILL_HOOK, "-p", "kp", "build", "app", cwd=lab.project())
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    scope_dir = scope_dirs(lab.cache_dir)[0]
    assert (scope_dir / "index.json").exists() == (KILL_POINTS[point] == "published")

    # sound as it is: an index is either absent or whole; the store lock died with its holder
    code, report = lab.verify(session, deep=True)
    assert code == 0 and report["sound"], report
    fresh = sessions.start()
    started = time.monotonic()
    result = lab.cc(fresh, "-p", "next", *PLAIN, "build", "app")
    assert result.returncode == 0, result.report
    assert warnings(result) == [], result.stderr
    assert time.monotonic() - started < 60, "the next build waited for a lock"
    if KILL_POINTS[point] == "published":
        _fully_cached(result)
    assert summary(result)["app"].endswith("; exported")
    # gc removes what the killed process left: its staging, and temporary files in the scope
    gc = json.loads(lab.cache(fresh, "gc", "--json").stdout)
    assert gc["staging_reclaimed"] == 1, gc
    assert staging_leftovers(lab.cache_dir) == []
    assert sorted(p.name for p in scope_dirs(lab.cache_dir)[0].iterdir()) == [
        "blobs", "index.json", "oci-layout", "scope.json"]  # fmt: skip
    lab.assert_sound(fresh)


# --- gc ------------------------------------------------------------------------------------------------


def _plant_leftovers(cache_dir: Path) -> None:
    """What gc is for: a dead build's staging (with a partial blob), an orphan blob, a dead lease."""
    root = store_root(cache_dir)
    dead = root / "staging" / "faults_app-0000000000000000.00000000deadbeef"
    (dead / "ingest" / "abc").mkdir(parents=True)
    (dead / "ingest" / "abc" / "data").write_bytes(b"partial" * 1000)
    (dead / "blobs").symlink_to("../../blobs")
    (dead.parent / (dead.name + ".lock")).write_text("{}")
    orphan = os.urandom(4096)
    import hashlib

    path = root / "blobs" / "sha256" / hashlib.sha256(orphan).hexdigest()
    path.write_bytes(orphan)
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    (root / "leases" / "import.00000000deadbeef.lease").write_text('{"digest": "sha256:' + "0" * 64 + '", "size": 1}')


def test_two_gc_at_once(lab: Lab, sessions: harness.Sessions, template: Path) -> None:
    copy_store(template, lab.cache_dir)
    _plant_leftovers(lab.cache_dir)
    session = sessions.start()
    env = session.env()
    env.update(lab.env())
    base = [sys.executable, "-m", "composecache", "cache", "gc", "--json", "--grace", "0"]
    procs = [subprocess.Popen([*base, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in ([], [], ["--keep-storage", "1GB"])]  # fmt: skip
    results = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], results
    reports = [json.loads(out) for out, _ in results]
    assert sum(r["staging_reclaimed"] for r in reports) == 1, reports
    assert sum(r["blobs_removed"] for r in reports) == 1, reports
    assert all(r["scopes_evicted"] == [] for r in reports), reports
    assert staging_leftovers(lab.cache_dir) == []
    assert list((store_root(lab.cache_dir) / "leases").iterdir()) == []
    lab.assert_sound(session)
    _fully_cached(lab.cc(session, "-p", "gc2", *PLAIN, "build", "app"))


def test_gc_during_builds(lab: Lab, sessions: harness.Sessions, template: Path) -> None:
    """gc with no grace period in a loop while two sessions export new layers and a third imports."""
    copy_store(template, lab.cache_dir)
    lab.project()  # before the threads start
    exporters = [sessions.start(), sessions.start()]
    stop = threading.Event()
    gc_results: list[harness.Result] = []

    def collect() -> None:
        while not stop.is_set():
            gc_results.append(lab.cache(exporters[0], "gc", "--grace", "0", "--json"))

    collector = threading.Thread(target=collect)
    collector.start()
    builds: list[harness.Result] = []
    try:
        for round_no in range(3):
            # --no-cache: new random payloads, so new blobs land while gc sweeps; a new session imports
            jobs = [
                (session, ["-p", f"g{n}r{round_no}", "build", "--no-cache", "app"])
                for n, session in enumerate(exporters)
            ]
            jobs.append((sessions.start(), ["-p", f"imp{round_no}", "build", "app"]))
            threads = [threading.Thread(target=lambda s=s, a=a: builds.append(lab.cc(s, *a))) for s, a in jobs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        stop.set()
        collector.join()
    assert [b.returncode for b in builds] == [0] * len(builds), "\n".join(b.output[-2000:] for b in builds)
    assert all(warnings(b) == [] for b in builds), [warnings(b) for b in builds]
    assert len(gc_results) >= 2 and all(r.returncode == 0 for r in gc_results), [r.output for r in gc_results]
    assert staging_leftovers(lab.cache_dir) == []
    lab.assert_sound(exporters[0])
    _fully_cached(lab.cc(sessions.start(), "-p", "after", *PLAIN, "build", "app"))


# --- the toolchain and the daemon ------------------------------------------------------------------------

FAKE_PLUGIN = """#!/bin/sh
# A fake {name} reporting an old version; everything else goes to the real binary.
if [ "$1" = docker-cli-plugin-metadata ]; then exec "{real}" "$@"; fi
for arg in "$@"; do
  case "$arg" in version) echo "{version}"; exit 0;; compose|buildx|-*) ;; *) break;; esac
done
exec "{real}" "$@"
"""


def _client_config(lab: Lab, session: harness.Session, case: str) -> dict[str, str]:
    """DOCKER_CONFIG (and PATH) giving the docker CLI the plugins of `case`."""
    real = {p.name: p.resolve() for p in (session.docker_config / "cli-plugins").iterdir()}
    config = lab.tmp / f"config-{case}"
    plugins = config / "cli-plugins"
    plugins.mkdir(parents=True)
    bin_dir = lab.tmp / f"bin-{case}"
    bin_dir.mkdir()
    for tool in ("git",):  # PATH without /usr/bin: no stray docker-compose (v1) to fall back to
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True,
                                                   check=True).stdout.strip())  # fmt: skip
    fakes = {
        "compose-too-old": ("docker-compose", "2.3.0"),
        "buildx-too-old": ("docker-buildx", "github.com/docker/buildx v0.9.1 ed00243"),
    }
    left_out = {"compose-missing": "docker-compose", "buildx-missing": "docker-buildx"}.get(case)
    for name, target in real.items():
        if name == left_out:
            continue
        if case in fakes and fakes[case][0] == name:
            (plugins / name).write_text(FAKE_PLUGIN.format(name=name, real=target, version=fakes[case][1]))
            (plugins / name).chmod(0o755)
        else:
            (plugins / name).symlink_to(target)
    if case == "compose-v1":  # no plugin; a standalone docker-compose that says it is 1.29.2
        (plugins / "docker-compose").unlink()
        fake = bin_dir / "docker-compose"
        fake.write_text(FAKE_PLUGIN.format(name="docker-compose", real=real["docker-compose"],
                                           version="docker-compose version 1.29.2, build 5becea4c"))  # fmt: skip
        fake.chmod(0o755)
    return {"DOCKER_CONFIG": str(config), "PATH": f"{session.bin_dir}:{bin_dir}"}


TOOLCHAIN_CASES = {
    # case -> (composecache's one warning, or None; whether the build exports)
    "compose-missing": (None, False),
    "compose-v1": ("(v1) cannot use a local cache", False),
    "compose-too-old": ("cannot export a cache", False),
    "buildx-missing": (None, True),
    "buildx-too-old": (None, True),
}


@pytest.mark.parametrize("case", list(TOOLCHAIN_CASES))
def test_compose_or_buildx_missing_or_too_old(case: str, lab: Lab, shared: harness.Session, template: Path) -> None:
    copy_store(template, lab.cache_dir)
    env = _client_config(lab, shared, case)
    plain_cmd = ["-p", f"p{case}", "build", "app"]
    if case == "compose-v1":
        plain = harness.run(["docker-compose", *plain_cmd], {**shared.env(), **env, "TMPDIR": str(lab.tmpdir)},
                            cwd=lab.project(), check=False)  # fmt: skip
    else:
        plain = lab.plain(shared, *plain_cmd, env=env)
    before = tree_state(lab.cache_dir)
    wrapped = lab.cc(shared, "-p", f"w{case}", "build", "app", env=env)
    assert wrapped.returncode == plain.returncode, f"plain:\n{plain.output}\ncomposecache:\n{wrapped.output}"
    warning, exports = TOOLCHAIN_CASES[case]
    if warning is None:
        assert warnings(wrapped) == [], wrapped.stderr
    else:
        _single_warning(wrapped, warning)
    if case == "compose-missing":
        assert plain.returncode != 0
        assert wrapped.stderr.strip().endswith(plain.stderr.strip()), wrapped.stderr
    else:
        assert plain.returncode == 0, plain.report
    if not exports:  # import only: it may record the use (scope.json, a lease), never publish
        after = tree_state(lab.cache_dir)
        assert [line for line in changed(before, after) if "index.json" in line or "/blobs/" in line] == []
    else:
        assert summary(wrapped)["app"].endswith("; exported"), wrapped.stderr
    lab.assert_sound(shared)


def test_daemon_unreachable(lab: Lab, shared: harness.Session, template: Path) -> None:
    copy_store(template, lab.cache_dir)
    before = tree_state(lab.cache_dir)
    nowhere = {"DOCKER_HOST": f"unix://{lab.tmp}/no-daemon.sock"}
    plain = lab.plain(shared, "-p", "x", "build", "app", env=nowhere)
    wrapped = lab.cc(shared, "-p", "x", "build", "app", env=nowhere)
    assert plain.returncode != 0
    assert wrapped.returncode == plain.returncode, wrapped.output
    assert "no-daemon.sock" in wrapped.stderr
    assert len(warnings(wrapped)) <= 1, wrapped.stderr

    context = str(lab.project() / "app")
    plain_docker = harness.docker(shared, "build", "--network", "none", context, check=False, extra_env=nowhere)
    wrapped_docker = lab.cc(shared, "docker", "build", "--network", "none", context, env=nowhere)
    assert plain_docker.returncode != 0
    assert wrapped_docker.returncode == plain_docker.returncode, wrapped_docker.output
    after = tree_state(lab.cache_dir)
    assert [line for line in changed(before, after) if "index.json" in line or "/blobs/" in line] == []
    lab.assert_sound(shared)


MALFORMED = {
    "yaml-syntax": "services:\n  app:\n    build: [unclosed\n",
    "unknown-key": "services:\n  app:\n    build: {context: ./app, network: none}\n    bogus: 1\n",
    "services-is-a-list": "services:\n  - app\n",
    "empty-file": "",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_compose_file(case: str, lab: Lab, shared: harness.Session) -> None:
    project = lab.project()
    (project / "compose.yaml").write_text(MALFORMED[case])
    plain = lab.plain(shared, "-p", "mal", "build")
    wrapped = lab.cc(shared, "-p", "mal", "build")
    assert plain.returncode != 0
    assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert not lab.cache_dir.exists() or scope_dirs(lab.cache_dir) == []


def test_failing_dockerfile(lab: Lab, sessions: harness.Sessions) -> None:
    project = lab.project("broken")
    plain = lab.plain(sessions.start(), "-p", "p", "build", cwd=project)
    wrapped = lab.cc(sessions.start(), "-p", "w", "build", cwd=project)
    assert plain.returncode != 0
    assert wrapped.returncode == plain.returncode, wrapped.output
    assert warnings(wrapped) == [], wrapped.stderr
    lines = summary(wrapped)
    assert lines["good"].endswith("; exported"), wrapped.stderr
    assert not lines["bad"].endswith("; exported"), wrapped.stderr
    assert [json.loads((d / "scope.json").read_text())["name"] for d in scope_dirs(lab.cache_dir)] == [
        no_git_scope("broken", "good", "good")
    ]
    lab.assert_sound(sessions.started[0])
