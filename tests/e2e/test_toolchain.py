"""The installer leaves the system alone and is a no-op the second time (issue 2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.e2e import harness


def test_system_apt_sources_and_libc_unchanged() -> None:
    before = os.environ.get("COMPOSECACHE_SYSTEM_SNAPSHOT")
    if not before:
        harness.missing("no system snapshot was recorded", "run through scripts/test, which records the system first")
    now = subprocess.run(
        [str(harness.REPO / "scripts" / "system-snapshot")], capture_output=True, text=True, check=True
    ).stdout
    assert Path(before).read_text() == now
    assert "trixie" not in now and "sid" not in now


def test_second_install_is_a_no_op() -> None:
    prefix = Path(os.environ.get("COMPOSECACHE_TOOLCHAIN", "/opt/composecache-toolchain")) / "stable"
    if not (prefix / "versions.txt").exists():
        harness.missing("the stable toolchain is not installed", "run scripts/install-toolchain --leg stable")
    before = (prefix / "versions.txt").stat().st_mtime_ns
    result = subprocess.run(
        [str(harness.REPO / "scripts" / "install-toolchain"), "--leg", "stable"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "compose" in result.stdout and "buildx" in result.stdout
    assert (prefix / "versions.txt").stat().st_mtime_ns == before
