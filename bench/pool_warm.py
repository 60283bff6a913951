"""Warm new-session time and data-root growth with the layer pool, without it, and with an empty pool.

    .venv/bin/python bench/pool_warm.py [--leg stable|latest] [--big-mb 200] [--files 20000] [--json out.json]

A 3-service stack on one shared base (random data plus many small files) is built cold in
session A; then, each in a fresh session, `composecache up --build -d`:

- `first_pool`:  the pool is empty (this session fills it: the once-ever cost);
- `pool`:        the pool is filled (the steady state: every later session);
- `nopool`:      COMPOSECACHE_POOL=0 (seeding, then BuildKit extracts every layer);
- `same_session`: the `pool` session again (the floor).

For each: wall time, `extracting` lines, and how much the session's data-root grew (`du -x`,
so a running container's overlay rootfs is not counted).  `COMPOSECACHE_POOL=0/1` is the only
switch; `composecache cache stats --json` gives the pool under "pool".
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import sandboxlib  # noqa: E402

DOCKERFILE = """\
FROM scratch AS base
ADD rootfs.tar /
RUN dd if=/dev/urandom of=/data.bin bs=1M count={big_mb} 2>/dev/null
RUN mkdir -p /many && cd /many && for d in $(seq 1 {dirs}); do mkdir $d; for f in $(seq 1 100); do \\
    echo "$d $f" > $d/$f; done; done

FROM base AS api
RUN dd if=/dev/urandom of=/api.bin bs=1M count={svc_mb} 2>/dev/null
CMD ["sleep", "3600"]

FROM base AS worker
RUN dd if=/dev/urandom of=/worker.bin bs=1M count={svc_mb} 2>/dev/null
CMD ["sleep", "3600"]

FROM base AS ui
RUN mkdir /ui && for f in $(seq 1 2000); do echo "$f" > /ui/$f; done
CMD ["sleep", "3600"]
"""
SERVICE = """\
  {name}:
    build: {{context: ., target: {name}, network: none}}
    network_mode: none
    stop_signal: SIGKILL
"""
EXTRACTING = re.compile(r"^#\d+ extracting sha256:", re.M)


def du_bytes(path: Path) -> int:
    # du exits 1 when a file vanishes during its walk (the daemon's own temp files); its total still stands.
    out = subprocess.run(["du", "-x", "-s", "-B1", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0])


def up(session: sandboxlib.Session, project: Path, cache: Path, name: str, **extra: str) -> dict[str, Any]:
    env = session.env()
    env.update({"COMPOSECACHE_DIR": str(cache), "COMPOSECACHE_SCOPE_PREFIX": "", "BUILDKIT_PROGRESS": "plain",
                **extra})  # fmt: skip
    before = du_bytes(session.data_root)
    subprocess.run(["sync"], check=True)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "composecache", "-v", "-p", name, "up", "--build", "-d"],
                          cwd=project, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    pool_line = next((line for line in proc.stderr.splitlines() if "debug: pool:" in line), "")
    return {"seconds": round(seconds, 2), "extracting": len(EXTRACTING.findall(proc.stdout + proc.stderr)),
            "data_root_growth_bytes": du_bytes(session.data_root) - before, "pool_line": pool_line}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leg", default="stable")
    parser.add_argument("--big-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--svc-mb", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pool-bench-"))
    started: list[sandboxlib.Session] = []
    try:
        project = work / "stack"
        project.mkdir()
        sandboxlib.make_rootfs_tar(project / "rootfs.tar")
        (project / "Dockerfile").write_text(DOCKERFILE.format(big_mb=args.big_mb, dirs=max(1, args.files // 100),
                                                              svc_mb=args.svc_mb))  # fmt: skip
        services = "".join(SERVICE.format(name=name) for name in ("api", "worker", "ui"))
        (project / "compose.yaml").write_text("services:\n" + services)
        cache = work / "cache"
        cache.mkdir()

        def session(label: str) -> sandboxlib.Session:
            started.append(sandboxlib.start(f"pw{len(started)}{label}", leg=args.leg))
            return started[-1]

        results: dict[str, Any] = {"leg": args.leg}
        results["cold"] = up(session("a"), project, cache, "a")
        results["first_pool"] = up(session("b"), project, cache, "b")
        pooled = session("c")
        results["pool"] = up(pooled, project, cache, "c")
        results["nopool"] = up(session("d"), project, cache, "d", COMPOSECACHE_POOL="0")
        results["same_session"] = up(pooled, project, cache, "c")
        stats = subprocess.run([sys.executable, "-m", "composecache", "cache", "stats", "--json"],
                               env={**started[0].env(), "COMPOSECACHE_DIR": str(cache)}, capture_output=True,
                               text=True, check=True)  # fmt: skip
        store = json.loads(stats.stdout)
        results["store_bytes"], results["pool_stats"] = store["bytes"], store["pool"]
        text = json.dumps(results, indent=1)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
    finally:
        for item in reversed(started):
            sandboxlib.stop(item)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
