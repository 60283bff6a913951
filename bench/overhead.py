"""overhead_ms: composecache's own time per invocation, and where it goes.

Own time is measured directly: composecache reports (with -v) how long the
compose it runs took; its own time is the rest of the wall time, start-up and
imports included.  Runs in session A with everything built and running:
`composecache up --build -d` through the `composecache` command (as a user
types it; .pyc files compiled, as pip would), median of --overhead-runs runs
with the session memo warm (every build after the first) and of a few with it
cold (COMPOSECACHE_MEMO=0: the first build of a project in a session).

Beside it, what the user sees end to end: composecache against plain
`docker compose up --build -d`, interleaved, median of the paired
differences.  That difference is composecache's own time plus the work
BuildKit does for the cache (reading the imported cache manifests, and above
all preparing and checking the export), which plain compose does not do.
"""

from __future__ import annotations

import pstats
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import PROJECT, PYTHON, REPO, Bench

if TYPE_CHECKING:
    import sandboxlib

UP = ["up", "--build", "-d"]
COMMAND = str(Path(PYTHON).parent / "composecache")
FOREGROUND = re.compile(r"the wrapped command ran ([\d.]+) ms")
COLD_MEMO_RUNS = 5


def _time(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def own_time_s(env: dict[str, str], cwd: str) -> float:
    """One `composecache -v up --build -d`: its wall time minus the time compose ran."""
    start = time.perf_counter()
    proc = subprocess.run([COMMAND, "-v", "-p", PROJECT, *UP], env=env, cwd=cwd, capture_output=True, text=True,
                          check=False)  # fmt: skip
    wall = time.perf_counter() - start
    match = FOREGROUND.search(proc.stderr)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"composecache up failed ({proc.returncode}): {proc.stderr[-500:]}")
    return wall - float(match.group(1)) / 1000


def measure(bench: Bench, session: sandboxlib.Session, runs: int) -> dict[str, Any]:
    # pip compiles an installed package's .pyc files; an editable install (the venv here) may not have them.
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "composecache")], check=True)
    env = bench.env(session)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cwd = str(bench.project)
    ours = [COMMAND, "-q", "-p", PROJECT, *UP]
    plain = ["docker", "compose", "-p", PROJECT, *UP]
    for _ in range(2):  # warm the page cache, BuildKit's state and the session memo
        _time(ours, env, cwd)
        _time(plain, env, cwd)
    own = [own_time_s(env, cwd) for _ in range(runs)]
    own_cold_memo = [own_time_s({**env, "COMPOSECACHE_MEMO": "0"}, cwd) for _ in range(COLD_MEMO_RUNS)]
    ours_s, plain_s, diff = [], [], []
    for i in range(runs):
        if i % 2:
            p, o = _time(plain, env, cwd), _time(ours, env, cwd)
        else:
            o, p = _time(ours, env, cwd), _time(plain, env, cwd)
        ours_s.append(o)
        plain_s.append(p)
        diff.append(o - p)
    return {
        "overhead_ms": _median_ms(own),
        "runs": runs,
        "own_ms": [round(value * 1000, 1) for value in own],
        "overhead_cold_memo_ms": _median_ms(own_cold_memo),
        "own_cold_memo_ms": [round(value * 1000, 1) for value in own_cold_memo],
        "end_to_end_extra_ms": _median_ms(diff),
        "buildkit_cache_work_ms": round(_median_ms(diff) - _median_ms(own), 1),
        "composecache_up_ms": _median_ms(ours_s),
        "plain_compose_up_ms": _median_ms(plain_s),
        "paired_diffs_ms": [round(d * 1000, 1) for d in diff],
        "breakdown": breakdown(bench, session, env, cwd),
    }


def breakdown(bench: Bench, session: sandboxlib.Session, env: dict[str, str], cwd: str) -> dict[str, Any]:
    n = 7
    result: dict[str, Any] = {
        "python_startup_ms": _median_ms([_time([PYTHON, "-c", "pass"], env, cwd) for _ in range(n)]),
    }
    version = [COMMAND, "--version"]
    result["composecache_version_ms"] = _median_ms([_time(version, env, cwd) for _ in range(n)])
    helpers = {
        "compose_config": ["docker", "compose", "-p", PROJECT, "config"],
        "compose_version": ["docker", "compose", "version", "--short"],
        "buildx_inspect": ["docker", "buildx", "inspect"],
        "docker_info": ["docker", "info", "--format", "{{json .}}"],
    }
    result["helper_commands_ms"] = {name: _median_ms([_time(argv, env, cwd) for _ in range(n)])
                                    for name, argv in helpers.items()}  # fmt: skip
    result["imports"] = import_times(env, cwd)
    result["profile"] = profile_once(bench, session, env, cwd)
    return result


IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def import_times(env: dict[str, str], cwd: str) -> dict[str, Any]:
    """Cumulative import times (ms) of the build path's modules, biggest first."""
    code = "import composecache.cli, composecache.compose.frontend, composecache.session.seeding"
    runs = []
    for _ in range(5):
        proc = subprocess.run([PYTHON, "-X", "importtime", "-c", code], env=env, cwd=cwd, capture_output=True,
                              text=True, check=False)  # fmt: skip
        top: dict[str, float] = {}
        for line in proc.stderr.splitlines():
            match = IMPORT_LINE.match(line)
            if match and len(match.group(3)) <= 3:  # top-level imports only (depth 0/1)
                top[match.group(4)] = int(match.group(2)) / 1000
        runs.append(top)
    names = set().union(*runs)
    medians = {name: round(statistics.median([r.get(name, 0.0) for r in runs]), 1) for name in names}
    biggest = dict(sorted(medians.items(), key=lambda item: item[1], reverse=True)[:12])
    total = round(sum(v for k, v in medians.items() if not k.startswith("composecache.") or k.count(".") == 1), 1)
    return {"top_level_ms": biggest, "note": "cumulative, median of 5; `python -X importtime`",
            "composecache_cli_ms": medians.get("composecache.cli"), "sum_ms": total}  # fmt: skip


def profile_once(bench: Bench, session: sandboxlib.Session, env: dict[str, str], cwd: str) -> dict[str, Any]:
    """cProfile one `composecache up --build -d`; the time waiting for compose is not ours."""
    out = bench.work / "overhead.prof"
    # main(), not the command: the command ends with os._exit, before cProfile could write its file.
    code = ("import cProfile, sys; from composecache.cli import main; "
            "cProfile.run('main(sys.argv[1:])', sys.argv.pop(1))")  # fmt: skip
    argv = [PYTHON, "-c", code, str(out), "-q", "-p", PROJECT, *UP]
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    stats = pstats.Stats(str(out))
    entries: dict[str, float] = {}
    for (filename, _, function), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename.rsplit("/", 1)[-1]
        entries[f"{short}:{function}"] = max(entries.get(f"{short}:{function}", 0.0), cumulative)
    total = stats.total_tt  # type: ignore[attr-defined]
    compose = entries.get("runner.py:run_foreground", 0.0)
    interesting = ("frontend.py:run", "runner.py:run_foreground", "runner.py:result", "runner.py:capture",
                   "toolchain.py:safe_capture", "session_probe.py:facts", "model_memo.py:project_key",
                   "seeding.py:seed_imports", "cached_build.py:prepare", "cached_build.py:finish",
                   "override.py:__init__", "project.py:model_from_config_output", "override.py:validate",
                   "frontend.py:_requests", "<frozen importlib._bootstrap>:_find_and_load")  # fmt: skip
    return {
        "wall_ms": round(wall * 1000, 1),
        "profiled_ms": round(total * 1000, 1),
        "waiting_for_compose_ms": round(compose * 1000, 1),
        "own_ms": round((total - compose) * 1000, 1),
        "cumulative_ms": {name: round(entries[name] * 1000, 1) for name in interesting if name in entries},
    }
