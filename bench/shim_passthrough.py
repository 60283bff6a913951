#!/usr/bin/env python3
"""How much time the `docker` shim adds to a command that is not a build (issue 5: target < 5 ms).

Installs the shims into a temporary directory (never into a real bin dir), then
runs the same docker command directly and through the shim, interleaved, many
times, and prints JSON: the median wall time of each, the median extra time
(the median of the paired differences) and, as a floor, the same for a real
binary that does nothing (`true`): that is the cost of the shim alone.

    .venv/bin/python bench/shim_passthrough.py [--runs 300] [-- docker args...]

Point DOCKER_HOST at a session (`eval "$(scripts/sandbox env NAME)"`) to time
a command that talks to a daemon; the default command is
`docker version --format {{.Client.Version}}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from composecache.session import toolchain  # noqa: E402
from composecache.shim import install as shim  # noqa: E402

DEFAULT_ARGS = ["version", "--format", "{{.Client.Version}}"]


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def measure(direct: list[str], shimmed: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    for _ in range(5):  # warm the page cache
        time_once(direct, env)
        time_once(shimmed, env)
    direct_times, shim_times, extra = [], [], []
    for i in range(runs):
        # Alternate the order so drift and caching hit both sides alike.
        if i % 2:
            d, s = time_once(direct, env), time_once(shimmed, env)
        else:
            s, d = time_once(shimmed, env), time_once(direct, env)
        direct_times.append(d)
        shim_times.append(s)
        extra.append(s - d)
    return {
        "direct_median_ms": round(statistics.median(direct_times) * 1000, 3),
        "shim_median_ms": round(statistics.median(shim_times) * 1000, 3),
        "extra_median_ms": round(statistics.median(extra) * 1000, 3),
        "extra_p90_ms": round(sorted(extra)[int(len(extra) * 0.9)] * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("docker_args", nargs="*", help="the docker command to time (after --)")
    options = parser.parse_args()
    args = options.docker_args or DEFAULT_ARGS
    env = dict(os.environ)
    real_docker = toolchain.which_real("docker", env)
    if real_docker is None:
        print("no docker CLI on PATH", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="composecache-bench-") as tmp:
        shims = Path(tmp) / "shims"
        shims.mkdir()
        bench_env = {**env, "PATH": f"{shims}:{env.get('PATH', '')}"}
        shim.install(shims, None, bench_env, python=Path(sys.executable))
        docker = measure([str(real_docker), *args], [str(shims / "docker"), *args], bench_env, options.runs)
        # The floor: a shim over a binary that does nothing.
        floor_dir = Path(tmp) / "floor"
        floor_dir.mkdir()
        true_binary = shutil.which("true") or "/bin/true"
        shutil.copy2(true_binary, floor_dir / "docker")
        floor_shims = Path(tmp) / "floor-shims"
        floor_shims.mkdir()
        floor_env = {**env, "PATH": f"{floor_shims}:{floor_dir}"}
        shim.install(floor_shims, None, floor_env, python=Path(sys.executable))
        floor = measure([str(floor_dir / "docker"), *args], [str(floor_shims / "docker"), *args], floor_env,
                        options.runs)  # fmt: skip
    print(json.dumps({
        "command": ["docker", *args],
        "runs": options.runs,
        "docker": str(real_docker),
        "shim": "/bin/sh -> " + os.path.realpath("/bin/sh"),
        "through_docker": docker,
        "shim_alone": floor,
        "target_ms": 5,
        "ok": docker["extra_median_ms"] < 5,
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
