"""What moves the warm new-session time: cache export options x seeding (issue 7, item 3).

    .venv/bin/python -m bench.experiments [--variants gzip,zstd,...] [--runs 1]

One cold build in session A fills the default store. Then for every variant, A
exports the same build again into a store of its own with that variant's
cache_to options (composecache's path, through bench/cc_variant.py), and fresh
sessions run `composecache up --build -d` from it, with seeding and without.
Writes bench/results/experiments.json (and prints a table).
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

from bench.harness import PROJECT, PYTHON, REPO, Bench, BenchError, phases, run_steps

VARIANTS: dict[str, str] = {
    "gzip": "",  # what composecache exports today: mode=max, gzip, docker media types
    "zstd": "compression=zstd,force-compression=true",
    "uncompressed": "compression=uncompressed,force-compression=true",
    "gzip-oci-image-manifest": "oci-mediatypes=true,image-manifest=true",
    # Not in the default list: re-exporting the flagship with mode=min from a session that had
    # built it made dockerd 26.1 (BuildKit 0.13) grow past 20 GB RSS in "preparing build cache
    # for export" on this 24 GB machine; the run was stopped before the machine ran out.
    "gzip-min": "mode=min",
}
# gzip-oci-image-manifest is left out too: as the fourth re-export from one session it made dockerd
# grow past 20 GB RSS as well (mode=min and image-manifest are not what composecache uses anyway).
DEFAULT_VARIANTS = ("gzip", "zstd", "uncompressed")


def variant_up(bench: Bench, session: Any, label: str, cache: Path, options: str, seed: bool) -> Any:
    argv = [PYTHON, "-m", "bench.cc_variant", "-v", "-p", PROJECT, "--progress", "plain", "up", "--build", "-d"]
    env = bench.env(session, cache, BENCH_EXPORT_OPTIONS=options, COMPOSECACHE_SEED="auto" if seed else "0",
                    PYTHONPATH=str(REPO))  # fmt: skip
    return bench.run(session, label, argv, env)


def store_of(bench: Bench, name: str) -> Path:
    return bench.cache_dir(f"cache-{name}") if VARIANTS[name] else bench.cache_dir()


def du(path: Path) -> int:
    result = subprocess.run(["du", "-sb", "-L", str(path / "ns")], capture_output=True, text=True, check=False)
    try:
        return int(result.stdout.split()[0])
    except (IndexError, ValueError):
        return -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--runs", type=int, default=1, help="fresh sessions per variant and seeding mode")
    parser.add_argument("--leg", choices=("stable", "latest"), default="stable")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "experiments.json")
    options = parser.parse_args(argv)
    chosen = [name for name in options.variants.split(",") if name]
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "variants": {}}
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    with Bench(leg=options.leg, keep=options.keep) as bench:
        say(f"work dir {bench.work}")
        bench.setup()
        a = bench.start("a")
        cold = bench.composecache_up(a, "cold")
        results["cold_s"] = round(cold.seconds, 2)
        results["cold_phases"] = phases(cold.log)
        say(f"cold {cold.seconds:.1f}s")
        for name in chosen:
            store = store_of(bench, name)
            if VARIANTS[name]:
                reexport_s: float | None = variant_up(bench, a, f"export-{name}", store, VARIANTS[name], False).seconds
            else:
                reexport_s = None  # the default: the cold build's own store
            entry: dict[str, Any] = {"options": VARIANTS[name] or "(default)", "store_bytes": du(store),
                                     "reexport_s": reexport_s, "runs": []}  # fmt: skip
            results["variants"][name] = entry
            say(f"{name}: re-exported in {reexport_s}s, store {entry['store_bytes'] / 1e6:.0f} MB")
        bench.stop(a)
        for i in range(options.runs):
            for name in chosen:
                for seed in (True, False) if i % 2 == 0 else (False, True):
                    label = f"{name}-{'seeded' if seed else 'unseeded'}-{i}"
                    session = bench.start("x")
                    try:
                        timed = variant_up(bench, session, label, store_of(bench, name), VARIANTS[name], seed)
                    except BenchError as exc:
                        results["variants"][name]["runs"].append({"seeded": seed, "error": str(exc)[:500]})
                        say(f"{label}: FAILED {str(exc)[:200]}")
                        continue
                    finally:
                        bench.stop(session)
                    cached, total = run_steps(timed.output)
                    run = {
                        "seeded": seed,
                        "seconds": round(timed.seconds, 2),
                        "cached_steps": cached,
                        "run_steps": total,
                        "phases": phases(timed.log),
                        "load_avg": round(timed.load_before, 1),
                    }
                    results["variants"][name]["runs"].append(run)
                    say(f"{label}: {timed.seconds:.1f}s ({cached}/{total} cached)")
    for entry in results["variants"].values():
        for seed in (True, False):
            times = [run["seconds"] for run in entry["runs"] if run.get("seeded") is seed and "seconds" in run]
            key = "seeded_median_s" if seed else "unseeded_median_s"
            entry[key] = round(statistics.median(times), 2) if times else None
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'variant':26} {'store MB':>9} {'re-export s':>12} {'seeded s':>9} {'unseeded s':>11}")
    for name, entry in results["variants"].items():
        print(f"{name:26} {entry['store_bytes'] / 1e6:9.0f} {entry['reexport_s']!s:>12} "
              f"{entry.get('seeded_median_s')!s:>9} {entry.get('unseeded_median_s')!s:>11}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
