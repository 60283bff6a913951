"""The `remote` row: a warm first build on a NEW HOST, through the registry tier.

    .venv/bin/python -m bench.remote [--runs 3] [--leg stable] [--keep]    (standalone: cold + rows)

Entry point for bench/flagship.py: `measure(bench, runs)` after the cold build in
session A wrote host 1's store (`bench.cache_dir()`).  It

1. fills the registry from host 1: a fresh session on host 1 runs the flagship's
   `composecache up --build -d` with COMPOSECACHE_REMOTE set (warm locally; the
   scopes are pushed afterwards) -> `fill_s`, and the push line;
2. `runs` times: a fresh session on a new host (an empty cache directory of its
   own), the same command through the registry -> `warm_new_host_s` (median),
   with its CACHED / RUN step counts and how many services imported from the registry.

Standalone, it first builds cold in session A (host 1), so `fill_s` is also the
local warm new session on host 1 plus the push that composecache waited for.

The registry is the bench's own loopback registry (bench.reg), repository
`buildcache` beside the base images.  Rows print as JSON; `flagship` puts them
next to `warm_new_session` and `docker load`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from bench.harness import IMAGES, Bench, BenchError, phases, run_steps

REPOSITORY = "buildcache"
WAIT_FOR_PUSH_S = "600"  # the bench measures the push once, in the fill, and waits for it there


def _remote_env(bench: Bench) -> dict[str, str]:
    assert bench.reg is not None
    return {"COMPOSECACHE_REMOTE": f"{bench.reg.host}/{REPOSITORY}", "COMPOSECACHE_REMOTE_WAIT": WAIT_FOR_PUSH_S}


def _push_line(output: str) -> str | None:
    found = [line for line in output.splitlines() if re.search(r"composecache: registry .*: push", line)]
    return found[-1].strip() if found else None


def fill_registry(bench: Bench, label: str = "remote-fill") -> dict[str, Any]:
    """A fresh session on host 1 (its store warm) builds with the remote set: the scopes reach the registry."""
    session = bench.start(label)
    try:
        timed = bench.composecache_up(session, label, None, **_remote_env(bench))
        cached, total = run_steps(timed.output)
        return {"fill_s": round(timed.seconds, 2), "cached_steps": cached, "run_steps": total,
                "push_line": _push_line(timed.output)}  # fmt: skip
    finally:
        bench.stop(session)


def warm_new_host(bench: Bench, label: str) -> dict[str, Any]:
    """A fresh session on a new host (empty cache dir): every layer comes from the registry."""
    host = bench.cache_dir(f"{label}-host")
    session = bench.start(label)
    try:
        timed = bench.composecache_up(session, label, cache=host, **_remote_env(bench))
        cached, total = run_steps(timed.output)
        running = bench.running_services(session)
        if running != len(IMAGES):
            raise BenchError(f"{label}: {running} of {len(IMAGES)} services running after up")
        imported = [line for line in timed.output.splitlines() if "import from registry" in line]
        return {"seconds": round(timed.seconds, 2), "cached_steps": cached, "run_steps": total,
                "registry_imports": len(imported), "push_line": _push_line(timed.output),
                "phases": phases(timed.log)}  # fmt: skip
    finally:
        bench.stop(session)


def measure(bench: Bench, runs: int = 3) -> dict[str, Any]:
    """The `remote` row; needs host 1's store (bench.cache_dir()) filled by the cold build."""
    from bench.flagship import median

    fill = fill_registry(bench)
    rows = [warm_new_host(bench, f"remote-{i}") for i in range(runs)]
    return {
        "fill": fill,
        "warm_new_host_s": median([row["seconds"] for row in rows]),
        "runs_s": [row["seconds"] for row in rows],
        "detail": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.remote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--leg", default="stable", choices=("stable", "latest"))
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    options = parser.parse_args(argv)
    with Bench(leg=options.leg, keep=options.keep) as bench:
        print(f"bench work dir: {bench.work}", file=sys.stderr, flush=True)
        bench.setup()
        a = bench.start("a")
        try:
            cold = bench.composecache_up(a, "cold")
        finally:
            bench.stop(a)
        _, total = run_steps(cold.output)
        results = {"leg": options.leg, "cold_s": round(cold.seconds, 2), "cold_run_steps": total,
                   "remote": measure(bench, options.runs)}  # fmt: skip
        text = json.dumps(results, indent=2)
        print(text)
        if options.out:
            options.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
