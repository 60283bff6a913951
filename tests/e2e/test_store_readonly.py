"""Issue 3 acceptance: a session whose cache mount is read-only imports with full hits, on both
toolchain legs, and never writes.

Measured: without `digest=` buildx 0.13.1 silently builds cold from a read-only
mount, because BuildKit takes a lock file beside index.json even to read.  The store pins every
import by digest, so BuildKit never touches index.json nor its lock.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from composecache.errors import CacheUnavailable
from composecache.store import Store
from tests.e2e import harness
from tests.e2e.store_builds import assert_built, build, cache_cli, make_context, report
from tests.unit.store_fakes import tree_snapshot


@pytest.fixture
def read_only_view(cache_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """cache_dir bind-mounted read-only at another path (as a sandbox mounts it into a session)."""
    if shutil.which("mount") is None:
        harness.missing("mount(8) is missing", "apt-get install mount")
    view = tmp_path / "ro-cache"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(cache_dir), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)


def test_read_only_mount_imports_with_full_hits_on_both_legs_and_never_writes(
    sessions: harness.Sessions, cache_dir: Path, read_only_view: Path, tmp_path: Path, rootfs_tar: Path
) -> None:
    context = make_context(tmp_path / "ctx", rootfs_tar, "read-only")
    writer_store = Store.open(cache_dir)
    writer = sessions.start("stable")
    cold = build(writer, writer_store, "ro/app", context, "app:1")
    assert_built([cold])
    assert cold.outcome is not None and cold.outcome.published
    before = tree_snapshot(cache_dir)

    lines = []
    for leg in ("stable", "latest"):
        reader = sessions.start(leg)
        store = Store.open(read_only_view)
        assert not store.writable
        with pytest.raises(CacheUnavailable, match="read-only"):
            store.prepare_export("ro/app")
        spec = store.prepare_import("ro/app")
        assert spec is not None and spec.lease is None
        assert spec.cache_from.startswith(f"type=local,src={read_only_view}/") and ",digest=sha256:" in spec.cache_from
        warm = build(reader, store, "ro/app", context, "app:ro", export=False)
        assert_built([warm])
        harness.assert_all_run_steps_cached(warm.log, at_least=2)
        assert "could not lock" not in warm.log
        version = harness.docker(reader, "buildx", "version").stdout.strip()
        lines.append(f"{leg} ({version}): {warm.describe()}")
        verify = cache_cli(reader, read_only_view, "verify", "--deep")
        assert verify.returncode == 0, verify.report
        stats = cache_cli(reader, read_only_view, "stats", "--json")
        assert stats.returncode == 0, stats.report

    assert tree_snapshot(cache_dir) == before, "nothing in the store changed"
    report("read-only mount: import on both legs", lines)
