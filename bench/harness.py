"""What every flagship measurement needs: sessions, the registry, the project, timed commands.

A `Bench` owns a temp work dir, a loopback registry holding its stack's base
image, a copy of the stack's fixture (fixtures/flagship, or fixtures/flagship-xl
for the XL stack) and the shared cache directory; it starts session daemons on
demand and stops every one of them (and the registry) on close, whatever
happened.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import sandboxlib  # noqa: E402

from bench import registry  # noqa: E402

FIXTURE = "flagship"
PROJECT = "flagship"
BASE_IMAGE = "flagship/base:bookworm"
SERVICES = ("api", "ui", "worker", "docs")
IMAGES = tuple(f"helix-flagship/{service}:dev" for service in SERVICES)
PYTHON = sys.executable


@dataclass(frozen=True)
class Stack:
    """A compose project the bench builds: its fixture, project name, base image and images."""

    fixture: str
    project: str
    base_image: str
    images: tuple[str, ...]
    build_env: tuple[tuple[str, str], ...] = ()  # set for every command, and as build args of the base image


FLAGSHIP = Stack(FIXTURE, PROJECT, BASE_IMAGE, IMAGES)


class BenchError(Exception):
    """A measured command failed; the message names its log."""


@dataclass
class Timed:
    seconds: float
    log: Path
    output: str
    load_before: float
    load_after: float


@dataclass
class Bench:
    leg: str = "stable"
    keep: bool = False
    stack: Stack = FLAGSHIP
    tag: str = field(default_factory=lambda: f"fb{os.getpid() % 100000}")
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="composecache-bench-")))
    sessions: list[sandboxlib.Session] = field(default_factory=list)
    reg: registry.Registry | None = None
    counter: int = 0

    # --- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for session in list(reversed(self.sessions)):
            self.stop(session)
        if self.reg is not None:
            registry.stop(self.reg)
            self.reg = None
        if not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    @property
    def logs(self) -> Path:
        path = self.work / "logs"
        path.mkdir(exist_ok=True)
        return path

    @property
    def project(self) -> Path:
        return self.work / self.stack.fixture

    def cache_dir(self, name: str = "cache") -> Path:
        return self.work / name

    def setup(self) -> None:
        """Registry, project copy, base image pushed from a throwaway session."""
        self.reg = registry.start(self.work / "registry")
        rootfs = sandboxlib.make_rootfs_tar(self.work / "rootfs.tar")
        sandboxlib.copy_fixture(self.stack.fixture, self.project, rootfs)
        pusher = self.start("push")
        try:
            args = [arg for name, value in self.stack.build_env for arg in ("--build-arg", f"{name}={value}")]
            push = ["docker", "buildx", "build", "--network", "none", "--push", *args,
                    "-t", f"{self.reg.host}/{self.stack.base_image}", str(self.project / "base")]  # fmt: skip
            self.run(pusher, "push-base", push)
        finally:
            self.stop(pusher)

    def start(self, role: str) -> sandboxlib.Session:
        assert self.reg is not None
        self.counter += 1
        session = sandboxlib.start(f"{self.tag}-{role}{self.counter}", leg=self.leg,
                                   extra_daemon_config={"insecure-registries": [self.reg.host]})  # fmt: skip
        self.sessions.append(session)
        return session

    def stop(self, session: sandboxlib.Session) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
            sandboxlib.stop(session)

    # --- commands ------------------------------------------------------------------------------------

    def env(self, session: sandboxlib.Session, cache: Path | None = None, **extra: str) -> dict[str, str]:
        assert self.reg is not None
        env = session.env()
        env.update(FLAGSHIP_REGISTRY=self.reg.host, BUILDKIT_PROGRESS="plain", NO_COLOR="1")
        env.update(self.stack.build_env)
        env["COMPOSECACHE_DIR"] = str(cache or self.cache_dir())
        env.update(extra)
        return env

    def run(self, session: sandboxlib.Session, label: str, argv: list[str], env: dict[str, str] | None = None,
            check: bool = True) -> Timed:  # fmt: skip
        """Run argv in the project dir, timed; its output goes to logs/<label>.log."""
        log = self.logs / f"{label}.log"
        # The previous run's writes (a session's extracted layers: GBs) must not be flushed during this one:
        # the kernel throttles a writer once dirty pages pile up, and which run pays would be luck.
        os.sync()
        before = os.getloadavg()[0]
        start = time.monotonic()
        lines = []
        with open(log, "w") as handle:
            # Each line of the log carries the seconds since the start: where the time goes.
            proc = subprocess.Popen(argv, cwd=self.project, env=env or self.env(session), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    errors="replace")  # fmt: skip
            assert proc.stdout is not None
            guard = MemoryGuard(session, proc)
            for line in proc.stdout:
                lines.append(line)
                handle.write(f"[{time.monotonic() - start:7.2f}] {line}")
            proc.wait()
            guard.stop()
        seconds = time.monotonic() - start
        output = "".join(lines)
        if guard.tripped:
            raise BenchError(f"{label}: {guard.tripped} (log {log})")
        if check and proc.returncode != 0:
            tail = "\n".join(output.splitlines()[-30:])
            raise BenchError(f"{label}: {' '.join(argv[:6])} exited with {proc.returncode} (log {log}):\n{tail}")
        return Timed(seconds, log, output, before, os.getloadavg()[0])

    def composecache_up(self, session: sandboxlib.Session, label: str, cache: Path | None = None,
                        **extra: str) -> Timed:  # fmt: skip
        argv = [PYTHON, "-m", "composecache", "-v", "-p", self.stack.project, "--progress", "plain", "up", "--build",
                "-d"]  # fmt: skip
        return self.run(session, label, argv, self.env(session, cache, **extra))

    def compose(self, session: sandboxlib.Session, label: str, *args: str, env: dict[str, str] | None = None,
                files: tuple[str, ...] = ()) -> Timed:  # fmt: skip
        file_args = [arg for name in files for arg in ("-f", name)]
        return self.run(session, label, ["docker", "compose", *file_args, "-p", self.stack.project, *args],
                        env or self.env(session))  # fmt: skip

    def running_services(self, session: sandboxlib.Session) -> int:
        result = subprocess.run(["docker", "compose", "-p", self.stack.project, "ps", "--status", "running", "-q"],
                                cwd=self.project, env=self.env(session), capture_output=True, text=True,
                                check=False)  # fmt: skip
        return len(result.stdout.split())


class MemoryGuard:
    """Stops a measured command when the session's dockerd grows past half the machine's memory.

    Seen here: several cache re-exports with different options from one session made
    dockerd 26.1 grow past 20 GB RSS; a benchmark must never take a shared machine down.
    """

    def __init__(self, session: sandboxlib.Session, proc: subprocess.Popen[str], interval_s: float = 1.0) -> None:
        self.session = session
        self.proc = proc
        self.limit_kb = _mem_total_kb() // 2
        self.tripped = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(interval_s,), daemon=True)
        self._thread.start()

    def _watch(self, interval_s: float) -> None:
        while not self._done.wait(interval_s):
            pid = self.session.pid()
            rss = _rss_kb(pid) if pid else 0
            if self.limit_kb and rss > self.limit_kb:
                self.tripped = f"dockerd grew to {rss // 1024} MB RSS (limit {self.limit_kb // 1024} MB): stopped"
                self.proc.kill()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _mem_total_kb() -> int:
    try:
        return int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_steps(log: str) -> tuple[int, int]:
    """(RUN steps CACHED, RUN steps) in a plain-progress build log."""
    steps = {m.group(1) for m in re.finditer(r"^#(\d+) \[[^\]]*\] RUN ", log, re.M)}
    cached = {n for n in steps if re.search(rf"^#{n} CACHED$", log, re.M)}
    return len(cached), len(steps)


def tool_versions(session: sandboxlib.Session) -> dict[str, str]:
    env = session.env()

    def out(*argv: str) -> str:
        result = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)
        return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else ""

    return {
        "docker_server": out("docker", "version", "--format", "{{.Server.Version}}"),
        "docker_client": out("docker", "version", "--format", "{{.Client.Version}}"),
        "buildx": out("docker", "buildx", "version"),
        "compose": out("docker", "compose", "version", "--short"),
        "containerd": out("ctr", "--version"),
        "registry": out(str(registry.REGISTRY_BIN), "--version"),
        "composecache": out(PYTHON, "-m", "composecache", "--version"),
        "python": sys.version.split()[0],
    }


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "loadavg_at_start": os.getloadavg()[0],
    }


def store_stats(cache: Path) -> dict[str, object]:
    result = subprocess.run([PYTHON, "-m", "composecache", "--cache-dir", str(cache), "cache", "stats", "--json"],
                            capture_output=True, text=True, check=False)  # fmt: skip
    try:
        stats: dict[str, object] = json.loads(result.stdout)
        return stats
    except ValueError:
        return {"error": result.stderr.strip()[-300:]}


STAMP = re.compile(r"^\[\s*([\d.]+)\] (.*)$")
PHASE_MARKERS = (
    ("seeded", re.compile(r"composecache: debug: seeded ")),
    ("compose_started", re.compile(r"composecache: debug: running ")),
    ("first_step_cached", re.compile(r"^#\d+ CACHED$")),
    ("last_step_cached", re.compile(r"^#\d+ CACHED$")),
    ("images_exported", re.compile(r"^#\d+ (naming|unpacking) to .* done$")),
    ("layers_extracted", re.compile(r"^#\d+ extracting sha256:\S+ [\d.]+s done$")),
    ("cache_exported", re.compile(r"^#\d+ writing cache manifest ")),
    ("containers_started", re.compile(r"Container \S+\s+Started")),
)


def phases(log: Path) -> dict[str, float]:
    """When (seconds since start) each phase of a timestamped `up --build` log was last (or first) seen."""
    found: dict[str, float] = {}
    for raw in log.read_text(errors="replace").splitlines():
        match = STAMP.match(raw)
        if not match:
            continue
        seconds, line = float(match.group(1)), match.group(2)
        for name, pattern in PHASE_MARKERS:
            if pattern.search(line) and (name not in found or not name.startswith("first")):
                found[name] = seconds
    return found


COMPOSE_RAN = re.compile(r"the wrapped command ran ([\d.]+) ms")
SEED_TIME = re.compile(r"composecache: debug: seeded .* in ([\d.]+)s")
# "composecache: debug: pool: 12 of 12 layers registered (0 already there, filled 12 (944 MB) in 30.1s),
# 12 blobs linked, in 31.20s" (composecache/session/pool.py's summary)
POOL_TIME = re.compile(r"composecache: debug: pool: .* in ([\d.]+)s$")
POOL_FILL = re.compile(r"composecache: debug: pool: .*filled \d+ \(\d+ MB\) in ([\d.]+)s")
POOL_REGISTERED = re.compile(r"composecache: debug: pool: (\d+) of (\d+) layers registered \((\d+) already there")
EXTRACTING = re.compile(r"^#\d+ extracting sha256:\S+ ([\d.]+)s done$")


def breakdown(timed: Timed) -> dict[str, float | int | None]:
    """Where a warm `composecache -v up --build -d` spent its time (seconds), from its timestamped log.

    composecache_own_s: its wall time minus the time compose ran (pool registration and seeding
    included), of it before_compose_s (start-up, registration, seeding) and after_compose_s
    (publishing, releasing the pins); buildkit_s: from compose's start to the build's last line;
    extraction_s: the sum of BuildKit's `extracting` times (inside buildkit_s); container_start_s:
    from the build's last line to the last container started.
    """
    compose_ran = COMPOSE_RAN.search(timed.output)
    compose_s = float(compose_ran.group(1)) / 1000 if compose_ran else None
    seed = SEED_TIME.findall(timed.output)
    lines = timed.output.splitlines()
    pool = [match.group(1) for line in lines if (match := POOL_TIME.search(line.strip()))]
    fill = [match.group(1) for line in lines if (match := POOL_FILL.search(line))]
    registered = [match.groups() for line in lines if (match := POOL_REGISTERED.search(line))]
    extractions = [float(m.group(1)) for line in timed.output.splitlines() if (m := EXTRACTING.match(line.strip()))]
    compose_start = build_end = containers = None
    for raw in timed.log.read_text(errors="replace").splitlines():
        match = STAMP.match(raw)
        if not match:
            continue
        seconds, line = float(match.group(1)), match.group(2)
        if compose_start is None and "composecache: debug: running " in line:
            compose_start = seconds
        elif line.startswith("#"):
            build_end = seconds
        elif re.search(r"Container \S+\s+Started", line):
            containers = seconds

    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 2) if a is not None and b is not None else None

    return {
        "wall_s": round(timed.seconds, 2),
        "composecache_own_s": round(timed.seconds - compose_s, 2) if compose_s is not None else None,
        "before_compose_s": round(compose_start, 2) if compose_start is not None else None,
        "after_compose_s": round(timed.seconds - compose_start - compose_s, 2)
        if compose_start is not None and compose_s is not None
        else None,
        "pool_s": round(sum(map(float, pool)), 2) if pool else None,
        "pool_fill_s": round(sum(map(float, fill)), 2) if fill else None,
        "pool_layers_registered": sum(int(r[0]) for r in registered) if registered else None,
        "pool_layers": sum(int(r[1]) for r in registered) if registered else None,
        "seeding_s": round(sum(map(float, seed)), 2) if seed else None,
        "compose_s": round(compose_s, 2) if compose_s is not None else None,
        "buildkit_s": span(compose_start, build_end),
        "extraction_s": round(sum(extractions), 2),
        "extracted_layers": len(extractions),
        "container_start_s": span(build_end, containers),
    }


def data_root_bytes(session: sandboxlib.Session) -> int:
    """Disk used by a session's data-root, on its own filesystem only (`du -x`): the overlay mounts
    of running containers (under <data-root>/rootfs) are not counted, symlinks are not followed."""
    result = subprocess.run(["du", "-sx", "--block-size=1", str(session.data_root)], capture_output=True, text=True,
                            check=False)  # fmt: skip
    try:
        return int(result.stdout.split()[0])
    except (IndexError, ValueError):
        return -1


def tarball(bench: Bench, label: str, images_tar: Path) -> tuple[float, float]:
    """What a user would do instead: `docker load` of saved images, then `compose up -d`, in a fresh session."""
    session = bench.start(label)
    try:
        load = bench.run(session, f"{label}-load", ["docker", "load", "-i", str(images_tar)])
        up = bench.compose(session, f"{label}-up", "up", "-d", "--no-build")
        if bench.running_services(session) != len(bench.stack.images):
            raise BenchError(f"{label}: services not running after docker load + up")
        return load.seconds, up.seconds
    finally:
        bench.stop(session)
