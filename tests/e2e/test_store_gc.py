"""Issue 3 acceptance: gc bounds the store and never breaks a build or an index.

- 10 rounds of builds with changing content, then `gc --keep-storage` half the size: the store
  fits, verify passes, and the most recently used scope still gives full hits in a new session.
- gc in a loop with a zero grace period while builds export: no build fails, and no scope index
  ever names a missing blob (checked under the store lock after every gc).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

from composecache.store import Store, scopes
from tests.e2e import harness
from tests.e2e.store_builds import assert_built, build, build_all, cache_cli, make_context, report, stats_json

ROUNDS = 10


def test_gc_to_half_size_keeps_the_most_recently_used_scope_warm(
    sessions: harness.Sessions, cache_dir: Path, tmp_path: Path, rootfs_tar: Path
) -> None:
    store = Store.open(cache_dir)
    builder = sessions.start("stable")
    lines = []
    started = time.monotonic()
    for round_no in range(1, ROUNDS + 1):
        # "main" changes every round (its old versions become orphans); each round adds a feature scope.
        main = make_context(tmp_path / f"main{round_no}", rootfs_tar, f"main-{round_no}", payload_kb=512)
        feature = make_context(tmp_path / f"feature{round_no}", rootfs_tar, f"feature-{round_no}", payload_kb=512)
        builds = build_all(
            [
                partial(build, builder, store, "gc/main", main, f"main:{round_no}"),
                partial(build, builder, store, f"gc/feature-{round_no}", feature, f"feature:{round_no}"),
            ]
        )
        assert_built(builds)
        assert all(b.outcome is not None and b.outcome.published for b in builds), [b.describe() for b in builds]
    lines.append(f"{ROUNDS} rounds x 2 scopes built in {time.monotonic() - started:.1f}s")
    # Using a scope counts as use: an import makes the oldest feature the most recently used scope.
    store.release_import(store.prepare_import("gc/feature-1"))

    before = stats_json(builder, cache_dir)
    total = before["bytes"]
    assert isinstance(total, int)
    half = total // 2
    gc = cache_cli(builder, cache_dir, "gc", "--keep-storage", str(half), "--grace", "0", "--json")
    assert gc.returncode == 0, gc.report
    gc_report = json.loads(gc.stdout)
    after = stats_json(builder, cache_dir)
    assert isinstance(after["bytes"], int)
    assert gc_report["fits"] and after["bytes"] <= half, (gc_report, after)
    survivors = {s["name"] for s in after["scopes"]}  # type: ignore[attr-defined]
    lines.append(
        f"before gc: {total} bytes, {before['blobs']} blobs, {len(before['scopes'])} scopes, "  # type: ignore[arg-type]
        f"{before['orphan_bytes']} orphan bytes"
    )
    lines.append(
        f"gc --keep-storage {half}: removed {gc_report['blobs_removed']} blobs, evicted "
        f"{gc_report['scopes_evicted']}; after: {after['bytes']} bytes, kept {sorted(survivors)}"
    )
    assert "gc/feature-1" in survivors, "the most recently used scope is never the one evicted"
    assert "gc/feature-2" not in survivors, "least recently used scopes go first"
    verify = cache_cli(builder, cache_dir, "verify", "--deep")
    assert verify.returncode == 0, verify.report

    fresh = sessions.start("stable")
    context = make_context(tmp_path / "feature1", rootfs_tar, "feature-1", payload_kb=512)
    warm = build(fresh, store, "gc/feature-1", context, "feature:again", export=False)
    assert_built([warm])
    harness.assert_all_run_steps_cached(warm.log, at_least=2)
    lines.append(f"new session, most recently used scope: {warm.describe()}")
    report("10 rounds, then gc to half the size", lines)


GC_LOOP_ROUNDS = 3


def test_gc_loop_with_zero_grace_never_fails_a_build_nor_breaks_an_index(
    sessions: harness.Sessions, cache_dir: Path, tmp_path: Path, rootfs_tar: Path
) -> None:
    store = Store.open(cache_dir)
    daemons = [sessions.start("stable"), sessions.start("stable")]
    stop = threading.Event()
    problems: list[str] = []
    gc_runs = 0

    def gc_loop() -> None:
        nonlocal gc_runs
        env = daemons[0].env()
        argv = [
            sys.executable,
            "-m",
            "composecache",
            "--cache-dir",
            str(cache_dir),
            "cache",
            "gc",
            "--grace",
            "0",
            "--json",
        ]
        while not stop.is_set():
            result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=120)
            if result.returncode != 0:
                problems.append(f"gc exited {result.returncode}: {result.stderr}")
            gc_runs += 1
            with store.locked(wait_forever=True):  # no publish in between: what gc left behind
                for scope_dir in scopes.scope_dirs(store.layout):
                    try:
                        scopes.inspect_scope(store.layout, scope_dir)
                    except scopes.ScopeProblem as problem:
                        problems.append(f"after gc #{gc_runs}: {scope_dir.name}: {problem} {problem.digest}")

    collector = threading.Thread(target=gc_loop)
    collector.start()
    all_builds = []
    try:
        for round_no in range(1, GC_LOOP_ROUNDS + 1):
            jobs = []
            for n, session in enumerate(daemons):
                for scope in ("gcloop/api", "gcloop/web"):
                    label = f"{scope}-{n}-{round_no}"  # new content: new blobs written while gc sweeps
                    context = make_context(tmp_path / label.replace("/", "_"), rootfs_tar, label)
                    tag = f"{scope.split('/')[1]}{n}:{round_no}"
                    jobs.append(partial(build, session, store, scope, context, tag))
            builds = build_all(jobs)
            all_builds += builds
            assert_built(builds)
    finally:
        stop.set()
        collector.join()
    assert not problems, "\n".join(problems)
    assert gc_runs >= 3, f"gc ran only {gc_runs} times during the builds"
    verify = cache_cli(daemons[0], cache_dir, "verify", "--deep")
    assert verify.returncode == 0, verify.report
    published = sum(bool(b.outcome and b.outcome.published) for b in all_builds)
    dropped = [b.outcome.reason for b in all_builds if b.outcome and not b.outcome.published]
    report(
        "gc loop (grace 0) during concurrent builds",
        [
            f"{len(all_builds)} builds, 0 failed; gc ran {gc_runs} times; {published} exports published, "
            f"{len(dropped)} dropped (a blob gc removed mid-build): {dropped[:3]}",
            f"verify --deep: {verify.stdout.strip()}",
        ],
    )
