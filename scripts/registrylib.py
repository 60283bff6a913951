"""A loopback OCI registry (Debian's `docker-registry`, distribution 2.8) for tests, the bench and demos.

Each registry has its own directory: `config.yml`, `storage/`, `registry.log`,
`registry.pid` and, with a user, `htpasswd`.  It listens on 127.0.0.1 only,
over plain HTTP, and is stopped by its pid (never by name).  The Debian package
also installs a system service on :5000; nothing here starts or touches it.

Used by `scripts/registry` (command line), the e2e tests and bench/.  Only the
standard library, so it works before the project is installed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BIN = Path("/usr/bin/docker-registry")
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0
PIDFILE = "registry.pid"
STATEFILE = "registry.json"

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: {readonly}
http:
  addr: 127.0.0.1:{port}
{auth}"""

AUTH = """\
auth:
  htpasswd:
    realm: composecache-test
    path: {path}
"""


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True)
class Registry:
    port: int
    pid: int
    workdir: Path
    user: str | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"


def registry_root() -> Path:
    return Path(os.environ.get("COMPOSECACHE_REGISTRY_ROOT", "/tmp/ccreg"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int, timeout: float = 2.0) -> bool:
    """Whether a registry answers /v2/ on the port (200, or 401 when it wants credentials)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=timeout) as response:
            return int(response.status) == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _htpasswd_line(user: str, password: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # stdlib through 3.12; libxcrypt makes bcrypt, which distribution requires

        # Cost 2^5, not 2^12: distribution checks the hash on every request, and a test registry
        # on a busy 2-core machine must answer within the client's timeouts.
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))
    return f"{user}:{hashed}\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def start(
    workdir: Path,
    *,
    port: int | None = None,
    user: str | None = None,
    password: str | None = None,
    readonly: bool = False,
) -> Registry:
    """Start a registry in `workdir` (its storage survives a stop: start it again on the same port)."""
    if not REGISTRY_BIN.exists():
        raise RegistryError(f"{REGISTRY_BIN} is missing: apt-get install docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    auth = ""
    if user is not None:
        (workdir / "htpasswd").write_text(_htpasswd_line(user, password or ""))
        auth = AUTH.format(path=workdir / "htpasswd")
    config = workdir / "config.yml"
    config.write_text(CONFIG.format(root=workdir / "storage", port=port, readonly=str(readonly).lower(), auth=auth))
    log = open(workdir / "registry.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    log.close()
    registry = Registry(port=port, pid=proc.pid, workdir=workdir, user=user)
    (workdir / PIDFILE).write_text(f"{proc.pid}\n")
    (workdir / STATEFILE).write_text(json.dumps({"port": port, "user": user}))
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (workdir / PIDFILE).unlink(missing_ok=True)
            raise RegistryError(f"docker-registry exited with {proc.returncode}: see {workdir / 'registry.log'}")
        if answers(port):
            return registry
        time.sleep(0.1)
    stop(registry)
    raise RegistryError(f"docker-registry did not answer within {START_DEADLINE_S:.0f} s")


def load(workdir: Path) -> Registry:
    try:
        state = json.loads((workdir / STATEFILE).read_text())
        pid = int((workdir / PIDFILE).read_text().strip())
    except (OSError, ValueError) as exc:
        raise RegistryError(f"no registry in {workdir}: {exc}") from exc
    return Registry(port=int(state["port"]), pid=pid, workdir=workdir, user=state.get("user"))


def running(registry: Registry) -> bool:
    return _alive(registry.pid)


def stop(registry: Registry, *, purge: bool = False) -> None:
    """Stop exactly the registry we started (by pid); `purge` removes its directory too."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(registry.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(registry.pid, os.WNOHANG)
            if pid:
                break
        except ChildProcessError:  # not our child (scripts/registry stop): poll the pid
            if not _alive(registry.pid):
                break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(registry.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(registry.pid, 0)
    (registry.workdir / PIDFILE).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(registry.workdir, ignore_errors=True)


@contextlib.contextmanager
def started(workdir: Path, **options: object) -> Iterator[Registry]:
    registry = start(workdir, **options)  # type: ignore[arg-type]
    try:
        yield registry
    finally:
        stop(registry, purge=True)


def docker_config_auth(registry_host: str, user: str, password: str) -> dict[str, object]:
    """A docker config.json `auths` entry (what `docker login` writes without a credential helper)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {registry_host: {"auth": token}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="registry",
        description="A loopback OCI registry (Debian's docker-registry) in its own directory, stopped by pid.",
        epilog="Example: scripts/registry start r1 && scripts/registry env r1  # COMPOSECACHE_REMOTE=...",
    )
    parser.add_argument("action", choices=("start", "stop", "env", "ls"))
    parser.add_argument("name", nargs="?", help="registry name (a directory under $COMPOSECACHE_REGISTRY_ROOT)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--user", help="require this user (htpasswd; password from --password)")
    parser.add_argument("--password", default="")
    parser.add_argument("--read-only", action="store_true", help="serve read-only (for distribution's gc)")
    parser.add_argument("--purge", action="store_true", help="stop: also remove the registry's storage")
    args = parser.parse_args(argv)
    root = registry_root()
    try:
        if args.action == "ls":
            for workdir in sorted(root.glob("*")):
                with contextlib.suppress(RegistryError):
                    reg = load(workdir)
                    print(f"{workdir.name}\t{reg.host}\t{'running' if running(reg) else 'stopped'}")
            return 0
        if not args.name or "/" in args.name or args.name in {".", ".."}:
            parser.error(f"{args.action} needs a registry NAME")
        workdir = root / args.name
        if args.action == "start":
            if (workdir / PIDFILE).exists() and running(load(workdir)):
                print(f"registry: registry {args.name} is already running", file=sys.stderr)
                return 1
            previous = None
            with contextlib.suppress(RegistryError):
                previous = load(workdir).port
            reg = start(workdir, port=args.port or previous, user=args.user, password=args.password,
                        readonly=args.read_only)  # fmt: skip
            print(f"registry {args.name} running (pid {reg.pid}): {reg.host}", file=sys.stderr)
        elif args.action == "env":
            reg = load(workdir)
            print(f"export COMPOSECACHE_REMOTE={reg.host}/buildcache")
            print("export COMPOSECACHE_REMOTE_INSECURE=1")
        else:
            stop(load(workdir), purge=args.purge)
        return 0
    except RegistryError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
