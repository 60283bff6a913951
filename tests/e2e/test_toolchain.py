"""The installer leaves the system alone and is a no-op the second time (issue 2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e import harness


def test_system_apt_sources_and_libc_unchanged() -> None:
    before = os.environ.get("COMPOSECACHE_SYSTEM_SNAPSHOT")
    if not before:
        if harness.in_ci():
            pytest.fail("CI=true but scripts/test did not record the system snapshot")
        pytest.skip("run through scripts/test, which records the system before installing")
    now = subprocess.run(
        [str(harness.REPO / "scripts" / "system-snapshot")], capture_output=True, text=True, check=True
    ).stdout
    assert Path(before).read_text() == now
    assert "trixie" not in now and "sid" not in now


def test_second_install_is_a_no_op() -> None:
    prefix = Path(os.environ.get("COMPOSECACHE_TOOLCHAIN", "/opt/composecache-toolchain")) / "stable"
    if not (prefix / "versions.txt").exists():
        if harness.in_ci():
            pytest.fail("CI=true but the stable toolchain is not installed")
        pytest.skip("toolchain not installed")
    before = (prefix / "versions.txt").stat().st_mtime_ns
    result = subprocess.run(
        [str(harness.REPO / "scripts" / "install-toolchain"), "--leg", "stable"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "compose" in result.stdout and "buildx" in result.stdout
    assert (prefix / "versions.txt").stat().st_mtime_ns == before
