"""The flagship benchmark (issue 7): one run, one machine, every number side by side.

    .venv/bin/python -m bench.flagship [--warm-runs 3] [--overhead-runs 15] [--leg stable]

1. cold_s: `composecache up --build -d` of fixtures/flagship in a fresh session A
   with an empty shared cache (base image from a loopback registry);
2. overhead_ms: in A, everything up to date: composecache's own time per
   `composecache up --build -d` (its wall time minus the time compose ran),
   median; beside it the end-to-end difference against plain `docker compose
   up --build -d` and where the time goes (bench/overhead.py);
3. warm_new_session_s: the same command in a fresh session B (the headline),
   with seeding (the default) and without (COMPOSECACHE_SEED=0), interleaved,
   medians of --warm-runs fresh sessions each;
4. warm_same_session_s: again in one B (the floor);
5. tarball_s: what a user would do instead: A saved the images once (not
   counted); a fresh session C runs `docker load` and `docker compose up -d`;
6. shim_passthrough_ms: bench/shim_passthrough.py against a session;
7. the XL stack (bench/xl.py, the `xl` section), in the same run.

--stacks picks the sections (default: flagship,xl); every section is a function
of SECTIONS, and bench/report.py renders each one it finds in the results.
Writes bench/results/latest.json, latest.md and latest.png (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import overhead, remote, report, xl
from bench.harness import (
    IMAGES,
    PYTHON,
    REPO,
    Bench,
    BenchError,
    Timed,
    breakdown,
    machine,
    phases,
    run_steps,
    store_stats,
    tarball,
    tool_versions,
)

RESULTS = REPO / "bench" / "results"


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2) if values else float("nan")


def summary(runs: list[Timed]) -> dict[str, Any]:
    return {"runs_s": [round(run.seconds, 2) for run in runs], "median_s": median([run.seconds for run in runs]),
            "load_avg": [round(run.load_before, 1) for run in runs]}  # fmt: skip


WARM_VARIANTS: dict[str, dict[str, str]] = {
    "seeded": {"COMPOSECACHE_SEED": "auto"},  # the default (the pool too, where the checkout has it)
    "unseeded": {"COMPOSECACHE_SEED": "0"},
    "nopool": {"COMPOSECACHE_SEED": "auto", xl.POOL_ENV: "0"},  # the default before the pool
}


def warm_new_session(bench: Bench, label: str, variant: str) -> tuple[Timed, dict[str, Any]]:
    session = bench.start(label)
    try:
        timed = bench.composecache_up(session, label, None, **WARM_VARIANTS[variant])
        cached, total = run_steps(timed.output)
        running = bench.running_services(session)
        if running != len(IMAGES):
            raise BenchError(f"{label}: {running} of {len(IMAGES)} services running after up")
        seeded = [line for line in timed.output.splitlines() if "seeded" in line]
        return timed, {
            "cached_steps": cached,
            "run_steps": total,
            "seed_line": seeded[-1] if seeded else None,
            "phases": phases(timed.log),
            "breakdown": breakdown(timed),
        }
    finally:
        bench.stop(session)


def shim_passthrough(bench: Bench) -> dict[str, Any]:
    script = REPO / "bench" / "shim_passthrough.py"
    if not script.exists():
        return {"value_ms": None, "reason": "bench/shim_passthrough.py is not there yet"}
    session = bench.start("shim")
    try:
        result = subprocess.run([PYTHON, str(script), "--runs", "100", "--", "ps", "-q"], env=session.env(),
                                capture_output=True, text=True, check=False, timeout=600)  # fmt: skip
        if result.returncode != 0:
            return {"value_ms": None, "reason": f"shim_passthrough.py failed: {result.stderr.strip()[-300:]}"}
        data = json.loads(result.stdout)
        return {"value_ms": data["through_docker"]["extra_median_ms"], "command": "docker ps -q", "detail": data}
    finally:
        bench.stop(session)


def flagship(options: argparse.Namespace, results: dict[str, Any], step: Any) -> None:
    """The flagship stack: the top-level keys of the results."""
    with Bench(leg=options.leg, keep=options.keep) as bench:
        print(f"bench work dir: {bench.work}", flush=True)
        bench.setup()

        # 1. cold, in A
        a = bench.start("a")
        results["tools"] = tool_versions(a)
        cold = bench.composecache_up(a, "cold")
        cached, total = run_steps(cold.output)
        results["cold"] = {**summary([cold]), "cached_steps": cached, "run_steps": total, "phases": phases(cold.log)}
        results["store"] = store_stats(bench.cache_dir())
        step(f"cold {cold.seconds:.1f}s ({total} RUN steps, {cached} cached)")
        images_tar = bench.work / "images.tar"
        bench.run(a, "save", ["docker", "save", "-o", str(images_tar), *IMAGES])
        results["images_tar_bytes"] = images_tar.stat().st_size

        # 2. overhead, in A (everything up to date)
        results["overhead"] = overhead.measure(bench, a, options.overhead_runs)
        over = results["overhead"]
        step(f"overhead {over['overhead_ms']} ms (cold memo {over['overhead_cold_memo_ms']} ms; end to end "
             f"+{over['end_to_end_extra_ms']} ms against plain compose)")  # fmt: skip
        bench.stop(a)

        # 3. + 4. warm in new sessions (seeded / not, interleaved), then the same-session floor
        variants = ("seeded", "unseeded", "nopool") if xl.pool_available() else ("seeded", "unseeded")
        if xl.pool_available():  # the first import fills the pool (once per layer, ever): not a warm run
            fill, fill_detail = warm_new_session(bench, "warm-fill", "seeded")
            results["first_warm_session"] = {"seconds": round(fill.seconds, 2), **fill_detail}
            step(f"first warm session (fills the pool) {fill.seconds:.1f}s")
        warm: dict[str, list[Timed]] = {variant: [] for variant in variants}
        details: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
        for i in range(options.warm_runs):
            order = variants if i % 2 == 0 else variants[::-1]
            for variant in order:
                timed, detail = warm_new_session(bench, f"warm-{variant}-{i}", variant)
                warm[variant].append(timed)
                details[variant].append(detail)
                step(f"warm new session ({variant}) {timed.seconds:.1f}s "
                     f"{detail['cached_steps']}/{detail['run_steps']} cached")  # fmt: skip
        results["warm_new_session"] = {variant: {**summary(runs), "detail": details[variant]}
                                       for variant, runs in warm.items()}  # fmt: skip
        b = bench.start("b")
        bench.composecache_up(b, "warm-b-first")
        same = [bench.composecache_up(b, f"warm-same-{i}") for i in range(options.warm_runs)]
        results["warm_same_session"] = summary(same)
        step(f"warm same session {results['warm_same_session']['median_s']}s")
        bench.stop(b)

        # 5. tarball
        loads, ups = [], []
        for i in range(options.tarball_runs):
            load_s, up_s = tarball(bench, f"tarball-{i}", images_tar)
            loads.append(load_s)
            ups.append(up_s)
            step(f"tarball: load {load_s:.1f}s + up {up_s:.1f}s")
        results["tarball"] = {"load_runs_s": [round(x, 2) for x in loads], "up_runs_s": [round(x, 2) for x in ups],
                              "median_s": median([x + y for x, y in zip(loads, ups, strict=True)]),
                              "load_median_s": median(loads)}  # fmt: skip

        # 6. shim
        results["shim_passthrough"] = shim_passthrough(bench)
        step(f"shim passthrough {results['shim_passthrough'].get('value_ms')} ms")

        # 7. the registry tier: host 1's store pushed to the bench's registry, then fresh sessions on
        # new hosts (empty cache directories) build through it
        if options.remote_runs > 0:
            results["remote"] = remote.measure(bench, options.remote_runs)
            step(f"remote: warm first build on a new host {results['remote']['warm_new_host_s']}s")
    results.update(report.headline(results))


def xl_section(options: argparse.Namespace, results: dict[str, Any], step: Any) -> None:
    results["xl"] = xl.measure(options.leg, options.keep, options.xl_scale, options.xl_warm_runs,
                               options.xl_nopool_runs, options.xl_tarball_runs, step)  # fmt: skip


# The sections of one run, in order; each adds its keys to the results (the flagship's includes the
# registry tier's `remote` row, rendered by report.SECTION_ROWS).
SECTIONS: dict[str, Any] = {"flagship": flagship, "xl": xl_section}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", default=",".join(SECTIONS), help=f"sections to run, of {', '.join(SECTIONS)}")
    parser.add_argument("--warm-runs", type=int, default=3, help="fresh sessions per warm variant (default 3)")
    parser.add_argument("--overhead-runs", type=int, default=15, help="runs for overhead_ms (default 15)")
    parser.add_argument("--tarball-runs", type=int, default=3)
    parser.add_argument("--remote-runs", type=int, default=2, help="fresh new hosts through the registry (0: none)")
    parser.add_argument("--xl-scale", type=float, default=xl.default_scale(),
                        help=f"XL sizes and file counts times this (default ${xl.SCALE_ENV} or 1)")  # fmt: skip
    parser.add_argument("--xl-warm-runs", type=int, default=3, help="XL: fresh sessions with the pool (default 3)")
    parser.add_argument("--xl-nopool-runs", type=int, default=1, help="XL: fresh sessions without (default 1)")
    parser.add_argument("--xl-tarball-runs", type=int, default=1)
    parser.add_argument("--leg", choices=("stable", "latest"), default="stable")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest")
    options = parser.parse_args(argv)
    chosen = [name for name in options.stacks.split(",") if name]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: use {', '.join(SECTIONS)}")

    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "leg": options.leg,
                               "machine": machine()}  # fmt: skip
    step = _progress()
    for name in chosen:
        SECTIONS[name](options, results, step)
        # written after every section: a later section that fails leaves the earlier ones' numbers
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        results["sections"] = chosen[: chosen.index(name) + 1]
        report.write(results, options.out)
    print(json.dumps(report.summary(results), indent=2))
    return 0


def _progress() -> Any:
    started = time.monotonic()

    def step(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    return step


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
