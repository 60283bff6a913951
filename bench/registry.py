"""A throwaway registry on loopback (Debian's `docker-registry`), for the flagship's base images.

Real stacks start `FROM` a registry image; the machine reaches no registry, so
the bench runs its own on 127.0.0.1 with its own config and storage in a temp
dir, and stops it by pid afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BIN = Path("/usr/bin/docker-registry")
START_DEADLINE_S = 30.0

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass(frozen=True)
class Registry:
    port: int
    pid: int
    workdir: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def start(workdir: Path) -> Registry:
    if not REGISTRY_BIN.exists():
        raise RuntimeError(f"{REGISTRY_BIN} is missing: apt-get install docker-registry (bench/run does)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(CONFIG.format(root=workdir / "storage", port=port))
    log = open(workdir / "registry.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    log.close()
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: see {workdir / 'registry.log'}")
        if _answers(port):
            return Registry(port=port, pid=proc.pid, workdir=workdir)
        time.sleep(0.1)
    stop(Registry(port=port, pid=proc.pid, workdir=workdir))
    raise RuntimeError("docker-registry did not answer within 30 s")


def stop(registry: Registry) -> None:
    """Stop exactly the registry we started (by pid) and remove its storage."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(registry.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(registry.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(registry.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(registry.pid, 0)
    shutil.rmtree(registry.workdir, ignore_errors=True)


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[Registry]:
    registry = start(workdir)
    try:
        yield registry
    finally:
        stop(registry)
