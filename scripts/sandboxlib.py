"""Isolated Docker "session" daemons, the way a sandbox runs them.

Each session has its own data-root, exec-root, pidfile, unix socket, docker
config directory (for CLI plugins and buildx state) and log.  The daemon runs
with ``--bridge=none --iptables=false --ip6tables=false``: builds that run
``RUN`` steps must use ``network: none`` / ``--network none``.

Used by ``scripts/sandbox`` (command line) and by the e2e test harness.  Only
the standard library, so it works before the project is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LEGS = ("stable", "latest")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
START_DEADLINE_S = 90.0
STOP_DEADLINE_S = 30.0


REPO = Path(__file__).resolve().parents[1]
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = (
    "sh",
    "echo",
    "cat",
    "ls",
    "sleep",
    "mkdir",
    "dd",
    "head",
    "sha256sum",
    "true",
    "false",
    "env",
    "touch",
    "rm",
    "cp",
    "wc",
    "grep",
    "seq",
    "tr",
    "gzip",
    "tar",
    "yes",
    "printf",
)


def make_rootfs_tar(dest: Path) -> Path:
    """A tiny root filesystem: a static busybox and its applet links (no registry needed)."""
    if not BUSYBOX.exists():
        raise RuntimeError("/bin/busybox is missing: install busybox-static (scripts/install-toolchain does)")
    stage = dest.parent / (dest.name + ".d")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "bin").mkdir(parents=True)
    (stage / "tmp").mkdir()
    shutil.copy2(BUSYBOX, stage / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (stage / "bin" / applet).symlink_to("busybox")
    # Fixed mtimes, owner and order: the same tar bytes every time, so the ADD layer caches.
    subprocess.run(
        ["tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
         "-C", str(stage), "-cf", str(dest), "."],
        check=True,
    )  # fmt: skip
    shutil.rmtree(stage)
    return dest


def copy_fixture(name: str, dest: Path, rootfs: Path) -> Path:
    """Copy fixtures/<name> to dest and put rootfs.tar in every directory holding a Dockerfile."""
    shutil.copytree(REPO / "fixtures" / name, dest, symlinks=True)
    for dockerfile in dest.rglob("Dockerfile*"):
        shutil.copy2(rootfs, dockerfile.parent / "rootfs.tar")
    return dest


class SandboxError(Exception):
    """A session could not be started, found or stopped; the message says why."""


def toolchain_prefix() -> Path:
    return Path(os.environ.get("COMPOSECACHE_TOOLCHAIN", "/opt/composecache-toolchain"))


def sandbox_root() -> Path:
    # Kept short on purpose: containerd's socket lives under the exec-root and
    # unix socket paths are limited to 107 bytes.
    return Path(os.environ.get("COMPOSECACHE_SANDBOX_ROOT", "/tmp/ccsb"))


def leg_dir(leg: str) -> Path:
    if leg not in LEGS:
        raise SandboxError(f"unknown leg {leg!r}: use one of {', '.join(LEGS)}")
    path = toolchain_prefix() / leg
    if not (path / "bin" / "dockerd").exists():
        raise SandboxError(f"the {leg} toolchain is not installed in {path}: run scripts/install-toolchain --leg {leg}")
    return path


@dataclass(frozen=True)
class Session:
    """One running (or stopped) session daemon and where its state lives."""

    name: str
    leg: str
    classic_store: bool
    state: Path

    @property
    def data_root(self) -> Path:
        return self.state / "data"

    @property
    def exec_root(self) -> Path:
        return self.state / "x"

    @property
    def socket(self) -> Path:
        return self.state / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.state / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.state / "dockerd.log"

    @property
    def docker_config(self) -> Path:
        return self.state / "config"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def bin_dir(self) -> Path:
        return toolchain_prefix() / self.leg / "bin"

    @property
    def containerd_socket(self) -> Path:
        return self.exec_root / "containerd" / "containerd.sock"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a client in this session uses."""
        env = dict(os.environ if base is None else base)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.docker_config)
        # A session is a machine of its own: composecache's session-local memo lives with it.
        env["COMPOSECACHE_MEMO_DIR"] = str(self.state / "memo")
        path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["PATH"] = f"{self.bin_dir}:{path}"
        return env

    def export_lines(self) -> list[str]:
        env = self.env({"PATH": "$PATH"})
        keys = ("DOCKER_HOST", "DOCKER_CONFIG", "COMPOSECACHE_MEMO_DIR", "PATH")
        return [f"export {key}={_shell_quote(env[key])}" for key in keys]

    def pid(self) -> int | None:
        return _read_pid(self.pidfile)

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and _alive(pid)


def _shell_quote(value: str) -> str:
    if value.startswith("$PATH") or value.endswith(":$PATH"):
        return '"' + value + '"'
    return shlex.quote(value)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise SandboxError(f"invalid session name {name!r}: 1-40 characters of letters, digits, '_', '.', '-'")


def load(name: str) -> Session:
    _check_name(name)
    state = sandbox_root() / name
    try:
        meta = json.loads((state / "session.json").read_text())
    except (OSError, ValueError) as exc:
        raise SandboxError(f"no session named {name!r} under {sandbox_root()}") from exc
    return Session(name=name, leg=meta["leg"], classic_store=meta["classic_store"], state=state)


def start(
    name: str, leg: str = "stable", classic_store: bool = False, extra_daemon_config: dict[str, object] | None = None
) -> Session:
    """Start a session daemon and wait until it answers `docker info`.

    extra_daemon_config: more daemon.json keys (e.g. {"insecure-registries": ["127.0.0.1:5000"]}).
    """
    _check_name(name)
    leg_path = leg_dir(leg)
    state = sandbox_root() / name
    session = Session(name=name, leg=leg, classic_store=classic_store, state=state)
    if state.exists():
        if session.running():
            raise SandboxError(f"session {name!r} is already running (pid {session.pid()})")
        _remove_state(session)
    state.mkdir(parents=True, mode=0o700)
    session.data_root.mkdir()
    session.exec_root.mkdir()
    plugins = session.docker_config / "cli-plugins"
    plugins.mkdir(parents=True)
    for plugin in sorted((leg_path / "docker-config" / "cli-plugins").iterdir()):
        (plugins / plugin.name).symlink_to(plugin.resolve())
    # Explicit in both directions: newer engines turn the containerd store on by default.
    daemon_json: dict[str, object] = {"features": {"containerd-snapshotter": not classic_store}}
    daemon_json.update(extra_daemon_config or {})
    (state / "daemon.json").write_text(json.dumps(daemon_json))
    (state / "session.json").write_text(json.dumps({"leg": leg, "classic_store": classic_store}))
    cmd = [
        str(leg_path / "bin" / "dockerd"),
        "--config-file", str(state / "daemon.json"),
        "--data-root", str(session.data_root),
        "--exec-root", str(session.exec_root),
        "--pidfile", str(session.pidfile),
        "-H", session.host,
        "--bridge=none", "--iptables=false", "--ip6tables=false",
    ]  # fmt: skip
    with open(session.log, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=session.env(),
            start_new_session=True,  # a Ctrl-C in the caller's terminal must not reach it
        )
    (state / "launcher.pid").write_text(str(proc.pid))
    try:
        return _wait_until_ready(session, proc)
    except SandboxError:
        raise
    except BaseException:  # interrupted while waiting (Ctrl-C, a test's time-out): no daemon left behind
        stop(session)
        raise


def _wait_until_ready(session: Session, proc: subprocess.Popen[bytes]) -> Session:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(session.log)
            _remove_state(session)
            raise SandboxError(f"dockerd for session {session.name!r} exited with {proc.returncode}:\n{tail}")
        if session.socket.exists() and _docker_info_ok(session):
            return session
        time.sleep(0.2)
    tail = _tail(session.log)
    stop(session)
    raise SandboxError(f"dockerd for session {session.name!r} did not answer within {START_DEADLINE_S:.0f}s:\n{tail}")


def _docker_info_ok(session: Session) -> bool:
    result = subprocess.run(
        [str(session.bin_dir / "docker"), "info", "--format", "{{.ID}}"],
        env=session.env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _processes_under(state: Path) -> list[int]:
    """Pids of processes whose command line names this session's state dir.

    dockerd's containerd and the containerd shims of its containers all carry
    the exec-root or data-root in their arguments; nothing else does.
    """
    needle = str(state).encode() + b"/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _wait_gone(pids: list[int], deadline_s: float) -> list[int]:
    deadline = time.monotonic() + deadline_s
    alive = [pid for pid in pids if _alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _alive(pid)]
    return alive


def _reap(pid: int) -> None:
    """Collect the exit status of a daemon we started ourselves (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: its parent (or init) reaps it


def _mounts_under(state: Path) -> list[str]:
    prefix = str(state) + "/"
    mounts = []
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point.startswith(prefix):
                mounts.append(mount_point)
    except OSError:
        pass
    return mounts


def stop(session: Session) -> None:
    """Stop exactly this session's dockerd, its containerd and shims; remove its state."""
    pids = [pid for pid in (session.pid(), _read_pid(session.state / "launcher.pid")) if pid]
    for pid in dict.fromkeys(pids):
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    for pid in _wait_gone(pids, STOP_DEADLINE_S):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, 5)
    for pid in pids:
        _reap(pid)
    _remove_state(session)


def _remove_state(session: Session) -> None:
    leftovers = _processes_under(session.state)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in _wait_gone(leftovers, 10):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(leftovers, 5)
    for mount_point in sorted(_mounts_under(session.state), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
    shutil.rmtree(session.state, ignore_errors=True)
    if session.state.exists():
        raise SandboxError(f"could not remove {session.state}")


def list_sessions() -> list[tuple[Session, bool]]:
    root = sandbox_root()
    if not root.is_dir():
        return []
    found = []
    for entry in sorted(root.iterdir()):
        try:
            session = load(entry.name)
        except SandboxError:
            continue
        found.append((session, session.running()))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sandbox",
        description="Run isolated Docker session daemons side by side, like a sandbox does.",
        epilog='Example: eval "$(scripts/sandbox start a && scripts/sandbox env a)"; docker info',
    )
    parser.add_argument("action", choices=("start", "stop", "env", "ls"))
    parser.add_argument("name", nargs="?", help="session name (not for ls)")
    parser.add_argument("--classic-store", action="store_true", help="turn the containerd image store off")
    parser.add_argument("--leg", choices=LEGS, default="stable", help="toolchain leg (default: stable)")
    args = parser.parse_args(argv)
    try:
        if args.action == "ls":
            for session, running in list_sessions():
                store = "classic" if session.classic_store else "containerd"
                state = "running" if running else "stopped"
                print(f"{session.name}\t{session.leg}\t{store}\t{state}\t{session.host}")
            return 0
        if not args.name:
            parser.error(f"{args.action} needs a session NAME")
        if args.action == "start":
            session = start(args.name, leg=args.leg, classic_store=args.classic_store)
            print(
                f"session {session.name} running ({session.leg}, pid {session.pid()}): {session.host}", file=sys.stderr
            )
        elif args.action == "env":
            print("\n".join(load(args.name).export_lines()))
        elif args.action == "stop":
            stop(load(args.name))
        return 0
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
