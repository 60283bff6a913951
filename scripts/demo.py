"""Fresh sessions, one shared cache: the cross-session demo (see scripts/demo).

A builds cold; B, fresh, gets every step from the cache (and, as the first
session to import the layers, fills the layer pool); C, fresh too, only
registers the layers' unpacked trees from the pool (the steady state).
"""

from __future__ import annotations

import argparse
import json
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
    argv = [sys.executable, "-m", "composecache", "-v", "-p", name, "--progress", "plain", "up", "--build", "-d"]
    print(f"\n$ composecache -v -p {name} --progress plain up --build -d     # session {session.name}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    for line in proc.stderr.splitlines():
        # composecache's own lines; of its debug lines, what the pool and seeding did
        if line.startswith("composecache:") and (": debug: " not in line or re.search(r"debug: (pool|seeded)", line)):
            print("  " + line)
    if proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
    return elapsed, proc.stdout + proc.stderr, proc.returncode


def run_step_counts(log: str) -> tuple[int, int]:
    steps = {m.group(1) for m in re.finditer(r"^#(\d+) \[[^\]]*\] RUN ", log, re.M)}
    cached = {n for n in steps if re.search(rf"^#{n} CACHED$", log, re.M)}
    return len(cached), len(steps)


def extracted_layers(log: str) -> int:
    return len(re.findall(r"^#\d+ extracting sha256:", log, re.M))


def pool_stats(cache: Path) -> str:
    """The pool's entries and bytes from `composecache cache stats --json`, or why not."""
    argv = [sys.executable, "-m", "composecache", "--cache-dir", str(cache), "cache", "stats", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        pool = json.loads(proc.stdout).get("pool")
    except ValueError:
        return "cache stats failed"
    if not isinstance(pool, dict):
        return "no pool in this version"
    entries = pool.get("entries", pool.get("layers"))
    size = pool.get("bytes")
    if not isinstance(size, int):
        return json.dumps(pool)
    return f"{entries} unpacked layers, {size / 1e6:.0f} MB, {pool.get('files')} files"


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
            sandboxlib.stop(b)
            started.remove(b)
            c = sandboxlib.start(f"{tag}-c", leg=args.leg)
            started.append(c)
            print(f"session C: {c.host} (own data-root {c.data_root}, fresh too)")
            pool_s, pool_log, pool_rc = timed_up(c, project, "c", cache)
        finally:
            for session in reversed(started):
                sandboxlib.stop(session)
        if cold_rc or warm_rc or pool_rc:
            print("demo FAILED: a build failed", file=sys.stderr)
            return 1
        cached, total = run_step_counts(warm_log)
        pool_cached, pool_total = run_step_counts(pool_log)
        _, cold_total = run_step_counts(cold_log)
        print("\nresult")
        print(f"  session A (cold):          {cold_s:6.1f} s, {cold_total} RUN steps run")
        print(f"  session B (new, warm):     {warm_s:6.1f} s, {cached}/{total} RUN steps CACHED, "
              f"{extracted_layers(warm_log)} layers extracted")  # fmt: skip
        print(f"  session C (new, warm):     {pool_s:6.1f} s, {pool_cached}/{pool_total} RUN steps CACHED, "
              f"{extracted_layers(pool_log)} layers extracted")  # fmt: skip
        print(f"  layer pool:                {pool_stats(cache)}")
        print(f"  B/A: {warm_s / cold_s:.2f}, C/A: {pool_s / cold_s:.2f}; every session stopped, nothing left running")
        ok = total and cached == total and pool_total and pool_cached == pool_total
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
