"""Issue 3 acceptance: 3 sessions x 3 scopes x 3 rounds, every round's builds started at once.

Measured before the store existed: one shared cache dir failed 8 of 24 such builds (ingest rename
races, a scope stuck on a missing tag).  Through the store: no failed build, a sound store, and
from round 2 on every RUN step CACHED.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from composecache.store import Store
from tests.e2e import harness
from tests.e2e.store_builds import assert_built, build, build_all, cache_cli, make_context, report, stats_json

SESSIONS = 3
SCOPES = 3
ROUNDS = 3
PAYLOAD_KB = 1024  # a fresh random layer per scope and session in round 1


def test_concurrent_sessions_share_one_store_without_failures(
    sessions: harness.Sessions, cache_dir: Path, tmp_path: Path, rootfs_tar: Path
) -> None:
    started = time.monotonic()
    store = Store.open(cache_dir)
    daemons = [sessions.start("stable") for _ in range(SESSIONS)]
    contexts = {
        f"stress/svc-{i}": make_context(tmp_path / f"ctx{i}", rootfs_tar, f"svc-{i}", payload_kb=PAYLOAD_KB)
        for i in range(SCOPES)
    }
    lines = []
    for round_no in range(1, ROUNDS + 1):
        round_started = time.monotonic()
        jobs = [
            partial(build, session, store, scope, context, f"svc{n}:r{round_no}")
            for session in daemons
            for n, (scope, context) in enumerate(contexts.items())
        ]
        builds = build_all(jobs)
        assert_built(builds)
        cached = sum(b.fully_cached for b in builds)
        published = sum(bool(b.outcome and b.outcome.published) for b in builds)
        lines.append(
            f"round {round_no}: {len(builds)} builds ok, {cached} fully CACHED, {published} published, "
            f"{time.monotonic() - round_started:.1f}s"
        )
        if round_no >= 2:
            missed = [b.describe() for b in builds if not b.fully_cached or not b.imported]
            assert not missed, f"round {round_no}: every RUN step must be CACHED:\n" + "\n".join(missed)
            for b in builds:
                harness.assert_all_run_steps_cached(b.log, at_least=2)
        unpublished = [b.describe() for b in builds if not (b.outcome and b.outcome.published)]
        assert not unpublished, "no gc runs here, so every export must publish:\n" + "\n".join(unpublished)

    verify = cache_cli(daemons[0], cache_dir, "verify", "--deep")
    assert verify.returncode == 0, verify.report
    stats = stats_json(daemons[0], cache_dir)
    scopes = stats["scopes"]
    assert isinstance(scopes, list)
    assert sorted(s["name"] for s in scopes) == sorted(contexts)
    assert list(store.layout.staging.iterdir()) == [], "every staging dir is gone after publish"
    lines.append(
        f"store: {stats['bytes']} bytes in {stats['blobs']} blobs, {stats['orphan_bytes']} orphan bytes; "
        f"verify --deep: {verify.stdout.strip()}"
    )
    lines.append(f"total {time.monotonic() - started:.1f}s")
    report("stress: 3 sessions x 3 scopes x 3 rounds", lines)
