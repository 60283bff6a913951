"""Helpers for the shim and docker-build e2e tests: shims installed for one session, first on PATH."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from composecache.shim import install as shim
from tests.e2e import harness


@dataclass
class ShimmedSession:
    """A session whose PATH starts with a shim directory (never a real bin dir)."""

    session: harness.Session
    shim_dir: Path
    cache_dir: Path

    @property
    def plugin_dir(self) -> Path:
        return self.session.docker_config / "cli-plugins"

    def env(self, **extra: str) -> dict[str, str]:
        env = self.session.env()
        env["PATH"] = f"{self.shim_dir}:{env['PATH']}"
        env.update({"COMPOSECACHE_DIR": str(self.cache_dir), "COMPOSECACHE_SCOPE_PREFIX": "",
                    "BUILDKIT_PROGRESS": "plain"})  # fmt: skip
        env.pop("COMPOSECACHE_DISABLE", None)
        env.update(extra)
        return env

    def install(self) -> list[shim.Change]:
        return shim.install(self.shim_dir, self.plugin_dir, self.env(), python=Path(sys.executable))

    def uninstall(self) -> list[shim.Change]:
        return shim.uninstall(self.shim_dir, self.plugin_dir)

    def run(self, *argv: str, cwd: Path | None = None, check: bool = True, **extra: str) -> harness.Result:
        """Run a command by name, as a user in the session would (PATH finds the shim first)."""
        return harness.run(list(argv), self.env(**extra), cwd=cwd, check=check)

    def real_docker(self, *args: str, cwd: Path | None = None, check: bool = True, **extra: str) -> harness.Result:
        """The real docker CLI (which starts the compose plugin shim for `compose`)."""
        return harness.run([str(self.session.bin_dir / "docker"), *args], self.env(**extra), cwd=cwd, check=check)


def shimmed(session: harness.Session, tmp_path: Path, cache_dir: Path) -> ShimmedSession:
    shim_dir = tmp_path / f"shims-{session.name}"
    shim_dir.mkdir()
    shimmed_session = ShimmedSession(session, shim_dir, cache_dir)
    shimmed_session.install()
    return shimmed_session


def scenario_copy(fixture: str, dest: Path, rootfs: Path, scenario: str) -> Path:
    """A copy of a fixture whose Dockerfile builds something no earlier scenario built.

    The scenario's line goes right after `ADD rootfs.tar /`, so every RUN step
    after it is new to a session that ran other scenarios: a CACHED step can
    only come from the shared cache.
    """
    harness.copy_fixture(fixture, dest, rootfs)
    for dockerfile in dest.rglob("Dockerfile"):
        lines = dockerfile.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("ADD rootfs.tar")) + 1
        lines.insert(at, f"RUN echo {scenario} > /scenario\n")
        dockerfile.write_text("".join(lines))
    return dest


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("composecache:")]
