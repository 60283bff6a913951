"""The XL stack: a flagship of a real monorepo's size, measured beside fixtures/flagship in one run.

fixtures/flagship-xl: 5 services, about 6.2 GiB of unique layers and 310k files
(a Go toolchain and module cache, a node_modules, a Python site-packages with
large shared objects and model weights, media and archives), several layers per
image, the base layers shared.  Its cold build is cheap in CPU; the warm path is
what counts.  `--xl-scale` (or COMPOSECACHE_BENCH_XL_SCALE) scales every size and
file count (0.1 for a quick dry run of the harness).

Measured (the `xl` section of bench/results/latest.json):
1. cold_s: `composecache up --build -d` in a fresh session A, empty store;
   A saves the images once (not timed): bytes_uncompressed and files are counted
   from the saved image layers (unique layers, regular files);
2. first_warm_session: a fresh session B's first build fills the pool (once per
   layer, ever); warm_same_session_s: B again (the floor);
3. warm_new_session_s: a fresh session, with the pool (the default), and
   warm_new_session_nopool_s with COMPOSECACHE_POOL=0 (seeding as usual),
   interleaved; each with a phase breakdown and the growth of its data-root
   (`du -x`, so a running container's overlay mount is not counted);
4. tarball_s: `docker load` of A's saved images + `compose up -d` in a fresh session.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bench.harness import (
    REPO,
    Bench,
    BenchError,
    Stack,
    Timed,
    breakdown,
    data_root_bytes,
    run_steps,
    store_stats,
    tarball,
)

SCALE_ENV = "COMPOSECACHE_BENCH_XL_SCALE"
SERVICES = ("api", "worker", "ui", "ml", "docs")
POOL_ENV = "COMPOSECACHE_POOL"

TARGET_WARM_S = 20.0
GOAL_WARM_S = 10.0
GOAL_WARM_OVER_SAME = 3.0
TARGET_GROWTH_OVER_BYTES = 0.10


def stack(scale: float) -> Stack:
    pct = max(1, round(scale * 100))
    return Stack(fixture="flagship-xl", project="flagship-xl", base_image="flagship-xl/base:bookworm",
                 images=tuple(f"helix-xl/{service}:dev" for service in SERVICES),
                 build_env=(("XL_PCT", str(pct)),))  # fmt: skip


def default_scale() -> float:
    try:
        return float(os.environ.get(SCALE_ENV, "1"))
    except ValueError:
        return 1.0


def pool_available() -> bool:
    """Whether this checkout of composecache has the pool (COMPOSECACHE_POOL is then meaningful)."""
    return (REPO / "composecache" / "session" / "pool.py").exists()


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


# --- what the images hold -----------------------------------------------------------------------


def _count_layer(stream: IO[bytes]) -> tuple[int, int]:
    """(bytes, regular files) of one uncompressed layer tar read from stream."""
    size = files = 0
    with tarfile.open(fileobj=stream, mode="r|") as layer:
        for member in layer:
            if member.isreg():
                size += member.size
                files += 1
    return size, files


def _count_blob(blob: IO[bytes]) -> tuple[int, int]:
    head = blob.peek(2)[:2] if hasattr(blob, "peek") else b""
    if head != b"\x1f\x8b":
        return _count_layer(blob)
    unzip = shutil.which("unpigz") or "gzip"
    proc = subprocess.Popen([unzip, "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def feed() -> None:
        try:
            shutil.copyfileobj(blob, stdin, 1 << 20)
        except BrokenPipeError:
            pass
        finally:
            stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        return _count_layer(proc.stdout)
    finally:
        proc.stdout.close()
        feeder.join()
        proc.wait()


def image_contents(images_tar: Path) -> dict[str, Any]:
    """Unique layers' uncompressed bytes and regular files, and each image's, from a `docker save` tar."""
    with tarfile.open(images_tar) as outer:
        try:
            manifest_file = outer.extractfile("manifest.json")
        except KeyError:
            manifest_file = None
        if manifest_file is None:
            raise BenchError(f"{images_tar}: no manifest.json (not a `docker save` archive)")
        manifest = json.load(manifest_file)
        layers: dict[str, tuple[int, int]] = {}
        images: dict[str, dict[str, int]] = {}
        for entry in manifest:
            total_bytes = total_files = 0
            for path in entry["Layers"]:
                if path not in layers:
                    try:
                        blob = outer.extractfile(path)
                    except KeyError:
                        blob = None
                    if blob is None:
                        raise BenchError(f"{images_tar}: layer {path} missing")
                    layers[path] = _count_blob(blob)
                total_bytes += layers[path][0]
                total_files += layers[path][1]
            name = (entry.get("RepoTags") or [entry["Config"]])[0]
            images[name] = {"layers": len(entry["Layers"]), "bytes": total_bytes, "files": total_files}
    return {
        "bytes_uncompressed": sum(size for size, _ in layers.values()),
        "files": sum(files for _, files in layers.values()),
        "unique_layers": len(layers),
        "bytes_uncompressed_sum_of_images": sum(image["bytes"] for image in images.values()),
        "images": images,
    }


# --- the timed runs -----------------------------------------------------------------------------


def warm_new_session(bench: Bench, label: str, pool: bool) -> tuple[Timed, dict[str, Any]]:
    session = bench.start(label)
    try:
        before = data_root_bytes(session)
        extra = {} if pool else {POOL_ENV: "0"}
        timed = bench.composecache_up(session, label, None, **extra)
        cached, total = run_steps(timed.output)
        running = bench.running_services(session)
        if running != len(bench.stack.images):
            raise BenchError(f"{label}: {running} of {len(bench.stack.images)} services running after up")
        after = data_root_bytes(session)
        return timed, {
            "seconds": round(timed.seconds, 2),
            "load_avg": round(timed.load_before, 1),
            "cached_steps": cached,
            "run_steps": total,
            "phases": breakdown(timed),
            "data_root_before_bytes": before,
            "data_root_growth_bytes": after - before,
            "pool_lines": [line for line in timed.output.splitlines() if "pool" in line.lower()][-5:],
        }
    finally:
        bench.stop(session)


def measure(leg: str, keep: bool, scale: float, warm_runs: int, nopool_runs: int, tarball_runs: int,
            step: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    """The XL section of the results (every session it starts is stopped, its work dir removed)."""
    xl = stack(scale)
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "scale": scale,
                           "xl_pct": dict(xl.build_env)["XL_PCT"], "pool_in_checkout": pool_available()}  # fmt: skip
    with Bench(leg=leg, keep=keep, stack=xl, tag=f"xl{os.getpid() % 100000}") as bench:
        step(f"xl: work dir {bench.work} (scale {scale})")
        bench.setup()

        a = bench.start("a")
        cold = bench.composecache_up(a, "xl-cold")
        cached, total = run_steps(cold.output)
        out["cold"] = {"seconds": round(cold.seconds, 2), "cached_steps": cached, "run_steps": total,
                       "phases": breakdown(cold)}  # fmt: skip
        out["store"] = store_stats(bench.cache_dir())
        step(f"xl: cold {cold.seconds:.1f}s ({total} RUN steps)")
        images_tar = bench.work / "images.tar"
        bench.run(a, "xl-save", ["docker", "save", "-o", str(images_tar), *xl.images])
        out["images_tar_bytes"] = images_tar.stat().st_size
        out["session_a_data_root_bytes"] = data_root_bytes(a)
        bench.stop(a)
        out["contents"] = image_contents(images_tar)
        contents = out["contents"]
        step(f"xl: {contents['bytes_uncompressed'] / 2**30:.2f} GiB uncompressed in {contents['unique_layers']} "
             f"unique layers, {contents['files']} files")  # fmt: skip

        # B: the first warm session fills the pool (once per layer, ever: not a warm new session's time),
        # then the same-session floor.
        b = bench.start("b")
        try:
            first = bench.composecache_up(b, "xl-warm-b-first")
            same = [bench.composecache_up(b, f"xl-warm-same-{i}") for i in range(max(warm_runs, 2))]
        finally:
            bench.stop(b)
        out["warm_same_session"] = {"runs_s": [round(t.seconds, 2) for t in same],
                                    "median_s": median([t.seconds for t in same]),
                                    "phases": breakdown(same[-1])}  # fmt: skip
        out["first_warm_session"] = {"seconds": round(first.seconds, 2), "phases": breakdown(first)}
        step(f"xl: first warm session (fills the pool) {first.seconds:.1f}s "
             f"(pool fill {out['first_warm_session']['phases']['pool_fill_s']}s); "
             f"same session {out['warm_same_session']['median_s']}s")  # fmt: skip

        runs: dict[str, list[dict[str, Any]]] = {"pool": [], "nopool": []}
        # pool and nopool interleaved: pool, nopool, pool, nopool, pool ... (the nopool runs are the long ones)
        order = [variant for i in range(max(warm_runs, nopool_runs))
                 for variant in ("pool", "nopool")
                 if (variant == "pool" and i < warm_runs) or (variant == "nopool" and i < nopool_runs)]  # fmt: skip
        for i, variant in enumerate(order):
            _, detail = warm_new_session(bench, f"xl-warm-{variant}-{i}", pool=variant == "pool")
            runs[variant].append(detail)
            phases = detail["phases"]
            step(f"xl: warm new session ({variant}) {detail['seconds']:.1f}s, {detail['cached_steps']}/"
                 f"{detail['run_steps']} cached, {phases['extracted_layers']} extracted, data-root "
                 f"+{detail['data_root_growth_bytes'] / 1e6:.0f} MB")  # fmt: skip
        out["warm_new_session"] = {
            variant: {"runs_s": [run["seconds"] for run in details],
                      "median_s": median([run["seconds"] for run in details]), "detail": details}
            for variant, details in runs.items()
        }  # fmt: skip

        loads, ups = [], []
        for i in range(tarball_runs):
            load_s, up_s = tarball(bench, f"xl-tarball-{i}", images_tar)
            loads.append(load_s)
            ups.append(up_s)
            step(f"xl: tarball load {load_s:.1f}s + up {up_s:.1f}s")
        out["tarball"] = {"load_runs_s": [round(x, 2) for x in loads], "up_runs_s": [round(x, 2) for x in ups],
                          "median_s": median([x + y for x, y in zip(loads, ups, strict=True)])}  # fmt: skip
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.update(headline(out))
    return out


def headline(out: dict[str, Any]) -> dict[str, Any]:
    """The XL keys of the results and its targets."""
    warm = out["warm_new_session"]["pool"]["median_s"]
    nopool = out["warm_new_session"]["nopool"]["median_s"]
    same = out["warm_same_session"]["median_s"]
    pool_runs = out["warm_new_session"]["pool"]["detail"]
    growth = int(statistics.median([run["data_root_growth_bytes"] for run in pool_runs])) if pool_runs else None
    nopool_runs = out["warm_new_session"]["nopool"]["detail"]
    size = out["contents"]["bytes_uncompressed"]
    keys: dict[str, Any] = {
        "cold_s": out["cold"]["seconds"],
        "warm_new_session_s": warm,
        "warm_new_session_nopool_s": nopool,
        "warm_same_session_s": same,
        "tarball_s": out["tarball"]["median_s"],
        "bytes_uncompressed": size,
        "files": out["contents"]["files"],
        "session_data_root_growth_bytes": growth,
        "session_data_root_growth_nopool_bytes": int(statistics.median(
            [run["data_root_growth_bytes"] for run in nopool_runs])) if nopool_runs else None,
    }  # fmt: skip
    keys["warm_phases"] = pool_runs[len(pool_runs) // 2]["phases"] if pool_runs else None
    keys["targets"] = {
        "warm_new_session_under_20s": warm is not None and warm < TARGET_WARM_S,
        "goal_warm_new_session_at_most_10s": warm is not None and warm <= GOAL_WARM_S,
        "goal_warm_new_session_at_most_3x_same_session": warm is not None
        and same is not None
        and warm <= GOAL_WARM_OVER_SAME * same,
        "data_root_growth_at_most_10pct_of_bytes": growth is not None and growth <= TARGET_GROWTH_OVER_BYTES * size,
    }
    keys["acceptance_size"] = size >= 6 * 10**9 and keys["files"] >= 300_000 and len(SERVICES) >= 4
    return keys
