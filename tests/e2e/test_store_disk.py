"""Issue 3 acceptance: the store is O(1) in the number of sessions.

One session builds a project and exports; four more fresh sessions build the same project through
the store.  The shared store must stay the same size (within 1%), while each live session still
holds its own image layers in its own data-root (that part is per session, by design).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from composecache.store import Store
from tests.e2e import harness
from tests.e2e.store_builds import assert_built, build, make_context, report, stats_json

MORE_SESSIONS = 4


def _du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False).stdout
    return int(out.split()[0]) if out else 0


def test_store_size_does_not_grow_with_sessions(
    sessions: harness.Sessions, cache_dir: Path, tmp_path: Path, rootfs_tar: Path
) -> None:
    store = Store.open(cache_dir)
    context = make_context(tmp_path / "ctx", rootfs_tar, "disk", payload_kb=2048)
    first = sessions.start("stable")
    empty_root = _du_bytes(first.data_root)
    cold = build(first, store, "disk/app", context, "app:1")
    assert_built([cold])
    assert cold.outcome is not None and cold.outcome.published
    baseline = stats_json(first, cache_dir)
    base_bytes = baseline["bytes"]
    assert isinstance(base_bytes, int) and base_bytes > 2 * 1024 * 1024
    lines = [
        f"after session 1 (cold build, {cold.seconds:.1f}s): store {base_bytes} bytes in {baseline['blobs']} "
        f"blobs; session data-root {empty_root} -> {_du_bytes(first.data_root)} bytes"
    ]
    for n in range(2, 2 + MORE_SESSIONS):
        session = sessions.start("stable")
        empty_root = _du_bytes(session.data_root)
        warm = build(session, store, "disk/app", context, "app:1")
        assert_built([warm])
        harness.assert_all_run_steps_cached(warm.log, at_least=2)
        stats = stats_json(session, cache_dir)
        size = stats["bytes"]
        assert isinstance(size, int)
        growth = (size - base_bytes) / base_bytes
        lines.append(
            f"after session {n} (warm, {warm.seconds:.1f}s): store {size} bytes ({growth:+.3%}), "
            f"{stats['blobs']} blobs; session data-root {empty_root} -> {_du_bytes(session.data_root)} bytes"
        )
        assert abs(growth) <= 0.01, f"store grew {growth:.2%} with session {n}: {stats}"
        scopes = stats["scopes"]
        assert isinstance(scopes, list)
        assert [s["name"] for s in scopes] == ["disk/app"]
    report("O(1) disk: 1 + 4 sessions, one project", lines)
