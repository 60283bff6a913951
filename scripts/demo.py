"""Two fresh sessions, one shared cache: the cross-session demo (see scripts/demo)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sandboxlib


def timed_up(session: sandboxlib.Session, project: Path, name: str, cache: Path) -> tuple[float, str, int]:
    env = session.env()
    env.update(COMPOSECACHE_DIR=str(cache), BUILDKIT_PROGRESS="plain")
    argv = [sys.executable, "-m", "composecache", "-p", name, "--progress", "plain", "up", "--build", "-d"]
    print(f"\n$ composecache -p {name} --progress plain up --build -d     # session {session.name}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    for line in proc.stderr.splitlines():
        if line.startswith("composecache:"):
            print("  " + line)
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
    return elapsed, proc.stdout + proc.stderr, proc.returncode


def run_step_counts(log: str) -> tuple[int, int]:
    steps = {m.group(1) for m in re.finditer(r"^#(\d+) \[[^\]]*\] RUN ", log, re.M)}
    cached = {n for n in steps if re.search(rf"^#{n} CACHED$", log, re.M)}
    return len(cached), len(steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leg", choices=sandboxlib.LEGS, default="stable")
    parser.add_argument("--fixture", default="demo", help="a compose project under fixtures/ (default: demo)")
    args = parser.parse_args()
    started: list[sandboxlib.Session] = []
    with tempfile.TemporaryDirectory(prefix="composecache-demo-") as tmp:
        work = Path(tmp)
        cache = work / "shared-cache"
        rootfs = sandboxlib.make_rootfs_tar(work / "rootfs.tar")
        project = sandboxlib.copy_fixture(args.fixture, work / args.fixture, rootfs)
        tag = f"demo{os.getpid() % 10000}"
        try:
            print(f"shared cache directory: {cache}")
            a = sandboxlib.start(f"{tag}-a", leg=args.leg)
            started.append(a)
            print(f"session A: {a.host} (own data-root {a.data_root})")
            cold_s, cold_log, cold_rc = timed_up(a, project, "a", cache)
            b = sandboxlib.start(f"{tag}-b", leg=args.leg)
            started.append(b)
            print(f"session B: {b.host} (own data-root {b.data_root}, fresh: no images, no build cache)")
            warm_s, warm_log, warm_rc = timed_up(b, project, "b", cache)
        finally:
            for session in reversed(started):
                sandboxlib.stop(session)
        if cold_rc or warm_rc:
            print("demo FAILED: a build failed", file=sys.stderr)
            return 1
        cached, total = run_step_counts(warm_log)
        _, cold_total = run_step_counts(cold_log)
        print("\nresult")
        print(f"  session A (cold):          {cold_s:6.1f} s, {cold_total} RUN steps run")
        print(f"  session B (new, warm):     {warm_s:6.1f} s, {cached}/{total} RUN steps CACHED")
        print(f"  B/A: {warm_s / cold_s:.2f}; both sessions stopped, nothing left running")
        return 0 if total and cached == total else 1


if __name__ == "__main__":
    sys.exit(main())
