"""The version matrix, driven through fake compose binaries that report a version."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from composecache.compose import versions
from composecache.session import toolchain
from composecache.session.toolchain import Builder, Version

CONTAINERD = Builder(driver="docker", containerd_store=True)
CLASSIC = Builder(driver="docker", containerd_store=False)


def fake_compose(tmp_path: Path, version: str) -> list[str]:
    path = tmp_path / "docker-compose"
    if version.startswith("1."):  # compose v1 knows no --short
        body = (
            f'case "$*" in *--short*) echo "no such option: --short" >&2; exit 1;; esac\n'
            f'echo "docker-compose version {version}, build 5becea4c"\n'
        )
    else:
        body = f'echo "{version}"\n'
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return [str(path)]


@pytest.mark.parametrize(
    ("reported", "strategy", "export", "env"),
    [
        ("1.29.2", "passthrough", False, {}),
        ("2.3.0", "override", False, {}),
        ("2.24.0", "override", True, {}),
        ("2.33.0", "override", True, {"COMPOSE_BAKE": "false"}),
        ("2.37.2", "override", True, {"COMPOSE_BAKE": "false"}),
        ("2.37.3", "override", True, {}),
        ("2.40.3", "override", True, {}),
        ("5.0.0", "override", True, {}),
    ],
)
def test_matrix(tmp_path: Path, reported: str, strategy: str, export: bool, env: dict[str, str]) -> None:
    version, _ = toolchain.probe_compose_version(fake_compose(tmp_path, reported), dict(os.environ))
    assert str(version) == reported
    plan = versions.plan_for(version, CONTAINERD)
    assert (plan.strategy, plan.export, plan.env) == (strategy, export, env)
    if not export:
        assert plan.warnings and plan.doctor_hints


def test_classic_store_gives_import_only_with_a_hint() -> None:
    plan = versions.plan_for(Version("2.40.3"), CLASSIC)
    assert plan.strategy == "override" and not plan.export
    assert any("containerd-snapshotter" in hint for hint in plan.doctor_hints)


def test_bake_requested_keeps_compose_bake() -> None:
    plan = versions.plan_for(Version("2.33.0"), CONTAINERD, requested="bake")
    assert plan.strategy == "bake" and "COMPOSE_BAKE" not in plan.env


def test_unknown_version_warns_and_tries() -> None:
    plan = versions.plan_for(None, CONTAINERD)
    assert plan.export and plan.warnings
