"""The bench's outputs: latest.json (everything), latest.md (the table), latest.png (the chart)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HEADLINE_KEYS = ("cold_s", "warm_new_session_s", "warm_new_session_unseeded_s", "warm_new_session_nopool_s",
                 "warm_same_session_s", "tarball_s", "overhead_ms", "shim_passthrough_ms", "ratios",
                 "targets")  # fmt: skip
XL_HEADLINE_KEYS = ("cold_s", "warm_new_session_s", "warm_new_session_nopool_s", "warm_same_session_s", "tarball_s",
                    "bytes_uncompressed", "files", "session_data_root_growth_bytes", "warm_phases",
                    "targets")  # fmt: skip


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """What the run prints at the end: the headline keys of every section it ran."""
    out: dict[str, Any] = {key: results[key] for key in HEADLINE_KEYS if key in results}
    if "xl" in results:
        out["xl"] = {key: results["xl"].get(key) for key in XL_HEADLINE_KEYS}
    return out


TARGET_WARM_S = 60.0
TARGET_WARM_OVER_COLD = 0.10
TARGET_WARM_OVER_TARBALL = 0.8
TARGET_OVERHEAD_MS = 150.0
TARGET_WARM_OVER_TARBALL_POOL = 0.25


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return round(a / b, 3)


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The top-level keys issue 7 asks for, from the detailed sections."""
    cold = results["cold"]["median_s"]
    warm = results["warm_new_session"]["seeded"]["median_s"]
    unseeded = results["warm_new_session"]["unseeded"]["median_s"]
    tarball = results["tarball"]["median_s"]
    overhead = results["overhead"]["overhead_ms"]
    ratios = {
        "warm_new_session_over_cold": _ratio(warm, cold),
        "warm_new_session_over_tarball": _ratio(warm, tarball),
        "warm_new_session_unseeded_over_cold": _ratio(unseeded, cold),
        "warm_new_session_unseeded_over_tarball": _ratio(unseeded, tarball),
        "seeded_over_unseeded": _ratio(warm, unseeded),
        "warm_same_session_over_cold": _ratio(results["warm_same_session"]["median_s"], cold),
    }
    nopool = results["warm_new_session"].get("nopool", {}).get("median_s")
    ratios["warm_new_session_nopool_over_tarball"] = _ratio(nopool, tarball)
    ratios["warm_new_session_over_nopool"] = _ratio(warm, nopool)
    targets = {
        "warm_new_session_under_60s": warm < TARGET_WARM_S,
        "warm_new_session_at_most_10pct_of_cold": (ratios["warm_new_session_over_cold"] or 1) <= TARGET_WARM_OVER_COLD,
        "warm_new_session_at_most_0.8x_tarball": (ratios["warm_new_session_over_tarball"] or 1)
        <= TARGET_WARM_OVER_TARBALL,
        "overhead_under_150ms": overhead < TARGET_OVERHEAD_MS,
        "warm_new_session_at_most_0.25x_tarball": (ratios["warm_new_session_over_tarball"] or 1)
        <= TARGET_WARM_OVER_TARBALL_POOL,
    }
    return {
        "cold_s": cold,
        "warm_new_session_s": warm,
        "warm_new_session_unseeded_s": unseeded,
        "warm_new_session_nopool_s": nopool,
        "warm_same_session_s": results["warm_same_session"]["median_s"],
        "tarball_s": tarball,
        "overhead_ms": overhead,
        "shim_passthrough_ms": results["shim_passthrough"].get("value_ms"),
        "ratios": ratios,
        "targets": targets,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}{unit}" if value < 10 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def flagship_markdown(results: dict[str, Any]) -> list[str]:
    r = results["ratios"]
    t = results["targets"]
    tools = results.get("tools", {})
    m = results.get("machine", {})
    store = results.get("store", {})
    ok = {True: "met", False: "**missed**"}
    over = results["overhead"]
    overhead_note = (f"a project's first build in a session (cold memo): {_fmt(over['overhead_cold_memo_ms'], ' ms')}; "
                     f"end to end against plain compose: +{_fmt(over['end_to_end_extra_ms'], ' ms')}, of which "
                     f"BuildKit's cache import and export {_fmt(over['buildkit_cache_work_ms'], ' ms')}")  # fmt: skip
    rows = [
        ("cold_s", "`composecache up --build -d`, fresh session, empty cache", _fmt(results["cold_s"], " s"), ""),
        ("warm_new_session_s", "the same in a fresh session, cache warm (seeding on: the default)",
         _fmt(results["warm_new_session_s"], " s"),
         f"{_fmt(r['warm_new_session_over_cold'])}x cold, {_fmt(r['warm_new_session_over_tarball'])}x tarball"),
        ("warm_new_session_unseeded_s", "the same with COMPOSECACHE_SEED=0 (layers stream through the build session)",
         _fmt(results["warm_new_session_unseeded_s"], " s"),
         f"{_fmt(r['warm_new_session_unseeded_over_cold'])}x cold, "
         f"{_fmt(r['warm_new_session_unseeded_over_tarball'])}x tarball"),
        *([("warm_new_session_nopool_s", "the same with COMPOSECACHE_POOL=0 (seeding on; layers extracted)",
            _fmt(results["warm_new_session_nopool_s"], " s"),
            f"{_fmt(r['warm_new_session_nopool_over_tarball'])}x tarball")]
          if results.get("warm_new_session_nopool_s") is not None else []),
        ("warm_same_session_s", "again in the same session (the floor)", _fmt(results["warm_same_session_s"], " s"),
         f"{_fmt(r['warm_same_session_over_cold'])}x cold"),
        ("tarball_s", "`docker load` of saved images + `compose up -d`, fresh session",
         _fmt(results["tarball_s"], " s"), f"load alone {_fmt(results['tarball']['load_median_s'], ' s')}"),
        ("overhead_ms", "composecache's own time per `up --build -d` in a warm session (wall time minus "
         "the time compose ran)", _fmt(results["overhead_ms"], " ms"), overhead_note),
        ("shim_passthrough_ms", "extra time of a non-build command through the shim",
         _fmt(results["shim_passthrough_ms"], " ms"), results["shim_passthrough"].get("reason", "")),
    ]  # fmt: skip
    lines = [
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model')}), {m.get('mem_gb')} GB; load average at start "
        f"{m.get('loadavg_at_start')}. Tools: docker {tools.get('docker_server')}, {tools.get('buildx')}, "
        f"compose {tools.get('compose')}, {tools.get('containerd')}. Leg: {results.get('leg')}.",
        f"Store after the cold build: {store.get('bytes', 0) / 1e9:.2f} GB in {store.get('blobs')} blobs "
        f"(saved images: {results.get('images_tar_bytes', 0) / 1e9:.2f} GB).",
        "",
        "| key | what | median | compared |",
        "|---|---|---:|---|",
        *[f"| `{key}` | {what} | {value} | {note} |" for key, what, value, note in rows],
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| warm new session < 60 s | {_fmt(results['warm_new_session_s'], ' s')} | "
        f"{ok[t['warm_new_session_under_60s']]} |",
        f"| warm new session <= 10% of cold | {_fmt(r['warm_new_session_over_cold'])}x | "
        f"{ok[t['warm_new_session_at_most_10pct_of_cold']]} |",
        f"| warm new session <= 0.8x tarball | {_fmt(r['warm_new_session_over_tarball'])}x | "
        f"{ok[t['warm_new_session_at_most_0.8x_tarball']]} |",
        f"| overhead < 150 ms | {_fmt(results['overhead_ms'], ' ms')} | {ok[t['overhead_under_150ms']]} |",
        f"| warm new session <= 0.25x tarball (the pool) | {_fmt(r['warm_new_session_over_tarball'])}x | "
        f"{ok[t['warm_new_session_at_most_0.25x_tarball']]} |",
        "",
        "Runs (seconds): cold "
        + ", ".join(map(str, results["cold"]["runs_s"]))
        + "; warm new session seeded "
        + ", ".join(map(str, results["warm_new_session"]["seeded"]["runs_s"]))
        + "; unseeded "
        + ", ".join(map(str, results["warm_new_session"]["unseeded"]["runs_s"]))
        + "".join(
            f"; {variant} " + ", ".join(map(str, entry["runs_s"]))
            for variant, entry in results["warm_new_session"].items()
            if variant not in ("seeded", "unseeded")
        )
        + "; same session "
        + ", ".join(map(str, results["warm_same_session"]["runs_s"]))
        + "; tarball load "
        + ", ".join(map(str, results["tarball"]["load_runs_s"]))
        + " + up "
        + ", ".join(map(str, results["tarball"]["up_runs_s"]))
        + ".",
        "",
    ]
    return lines


def _gb(value: Any) -> str:
    return "n/a" if value is None else f"{value / 1e9:.2f} GB"


PHASES = (
    ("composecache_own_s", "composecache's own time (pool registration and seeding included)"),
    ("before_compose_s", "of it, before compose starts"),
    ("after_compose_s", "of it, after compose (publishing, releasing pins)"),
    ("pool_s", "pool: registering the layers' snapshots"),
    ("seeding_s", "seeding the daemon's content store"),
    ("buildkit_s", "BuildKit (compose's build, all steps)"),
    ("extraction_s", "of it, layer extraction (sum of `extracting` times)"),
    ("container_start_s", "containers started after the build"),
)


def xl_markdown(results: dict[str, Any]) -> list[str]:
    x = results["xl"]
    t = x["targets"]
    ok = {True: "met", False: "**missed**"}
    contents = x["contents"]
    warm = x["warm_new_session"]
    scaled = f", scaled x{x['scale']}: not the acceptance size" if x["scale"] != 1 else ""
    load_runs = ", ".join(map(str, x["tarball"]["load_runs_s"]))
    up_runs = ", ".join(map(str, x["tarball"]["up_runs_s"]))
    lines = [
        f"## XL stack (fixtures/flagship-xl{scaled})",
        "",
        f"Measured {x.get('started', '?')} to {x.get('finished', '?')}.",
        "",
        f"{len(contents['images'])} services, {contents['unique_layers']} unique layers: "
        f"{contents['bytes_uncompressed'] / 2**30:.2f} GiB uncompressed ({_gb(contents['bytes_uncompressed'])}; "
        f"{_gb(contents['bytes_uncompressed_sum_of_images'])} as the sum of the images), {contents['files']} files. "
        f"Store after the cold build: {_gb(x['store'].get('bytes'))}; saved images {_gb(x['images_tar_bytes'])}. "
        f"Pool in this checkout: {'yes' if x['pool_in_checkout'] else 'no (both warm rows are the same path)'}.",
        "",
        "| key | what | median | runs |",
        "|---|---|---:|---|",
        f"| `xl.cold_s` | fresh session, empty store | {_fmt(x['cold_s'], ' s')} | |",
        f"| `xl.warm_new_session_s` | fresh session, store warm (the pool: the default) | "
        f"{_fmt(x['warm_new_session_s'], ' s')} | {', '.join(map(str, warm['pool']['runs_s']))} |",
        f"| `xl.warm_new_session_nopool_s` | the same with COMPOSECACHE_POOL=0 | "
        f"{_fmt(x['warm_new_session_nopool_s'], ' s')} | {', '.join(map(str, warm['nopool']['runs_s']))} |",
        f"| `xl.warm_same_session_s` | again in the same session (the floor) | "
        f"{_fmt(x['warm_same_session_s'], ' s')} | {', '.join(map(str, x['warm_same_session']['runs_s']))} |",
        f"| `xl.tarball_s` | `docker load` + `compose up -d`, fresh session | {_fmt(x['tarball_s'], ' s')} | "
        f"load {load_runs} + up {up_runs} |",
        f"| `xl.session_data_root_growth_bytes` | a warm new session's data-root (`du -x`), pool | "
        f"{_gb(x['session_data_root_growth_bytes'])} | nopool {_gb(x['session_data_root_growth_nopool_bytes'])} |",
        "",
        "Where a warm new session's time goes (seconds; the median run of each variant):",
        "",
        "| phase | pool | nopool |",
        "|---|---:|---:|",
    ]
    mid = {variant: entry["detail"][len(entry["detail"]) // 2]["phases"] if entry["detail"] else {}
           for variant, entry in warm.items()}  # fmt: skip
    for key, what in PHASES:
        lines.append(f"| {what} | {_fmt(mid['pool'].get(key))} | {_fmt(mid['nopool'].get(key))} |")
    lines.append(f"| layers extracted | {_fmt(mid['pool'].get('extracted_layers'))} | "
                 f"{_fmt(mid['nopool'].get('extracted_layers'))} |")  # fmt: skip
    same = x["warm_same_session_s"]
    lines += [
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| XL warm new session < 20 s (required) | {_fmt(x['warm_new_session_s'], ' s')} | "
        f"{ok[t['warm_new_session_under_20s']]} |",
        f"| goal: <= 10 s | {_fmt(x['warm_new_session_s'], ' s')} | {ok[t['goal_warm_new_session_at_most_10s']]} |",
        f"| goal: <= 3x the same-session floor | {_fmt(_ratio(x['warm_new_session_s'], same))}x | "
        f"{ok[t['goal_warm_new_session_at_most_3x_same_session']]} |",
        f"| data-root growth <= 10% of bytes_uncompressed | "
        f"{_fmt(_ratio(x['session_data_root_growth_bytes'], x['bytes_uncompressed']))}x | "
        f"{ok[t['data_root_growth_at_most_10pct_of_bytes']]} |",
        "",
    ]
    return lines


def remote_markdown(results: dict[str, Any]) -> list[str]:
    """The registry tier's row, next to the local warm new session and `docker load` of the same stack."""
    remote = results["remote"]
    return [
        "## Registry tier (flagship stack)",
        "",
        "| key | what | median | runs |",
        "|---|---|---:|---|",
        f"| `remote.warm_new_host_s` | fresh session on a new host (empty local store), every layer from the "
        f"registry | {_fmt(remote['warm_new_host_s'], ' s')} | {', '.join(str(x) for x in remote['runs_s'])} |",
        f"| `warm_new_session_s` | fresh session on the same host (local store) | "
        f"{_fmt(results.get('warm_new_session_s'), ' s')} | |",
        f"| `tarball_s` | `docker load` + `compose up -d` | {_fmt(results.get('tarball_s'), ' s')} | |",
        "",
        f"Host 1's push after its build: {remote['fill'].get('push_line') or 'no push line'}.",
        "",
    ]


# Renderers of the sections a run may hold, in order (bench/flagship.py's SECTIONS adds the keys).
SECTION_ROWS: dict[str, Any] = {"cold_s": flagship_markdown, "remote": remote_markdown, "xl": xl_markdown}


def markdown(results: dict[str, Any], chart_name: str = "latest.png") -> str:
    lines = [f"# Flagship benchmark ({results.get('started', '')})", ""]
    for key, render in SECTION_ROWS.items():
        if key in results:
            lines += render(results)
    lines += [f"![flagship benchmark]({chart_name})", ""]
    return "\n".join(lines)


def _bars(results: dict[str, Any]) -> list[tuple[str, list[tuple[str, float, str]], float]]:
    """Per stack in the results: (title, [(label, seconds, colour)], the target line)."""
    panels = []
    if "cold_s" in results:
        bars = [("cold", results["cold_s"], "#9e9e9e"), ("tarball\n(load + up)", results["tarball_s"], "#ffb74d"),
                ("warm new session\n(no seeding)", results["warm_new_session_unseeded_s"], "#90caf9")]  # fmt: skip
        if results.get("warm_new_session_nopool_s") is not None:
            bars.append(("warm new session\n(no pool)", results["warm_new_session_nopool_s"], "#64b5f6"))
        bars += [("warm new session\n(default)", results["warm_new_session_s"], "#1e88e5"),
                 ("warm same\nsession", results["warm_same_session_s"], "#66bb6a")]  # fmt: skip
        panels.append(("flagship: 4 services", bars, TARGET_WARM_S))
    if "xl" in results:
        x = results["xl"]
        gib = x["bytes_uncompressed"] / 2**30
        bars = [("cold", x["cold_s"], "#9e9e9e"), ("tarball\n(load + up)", x["tarball_s"], "#ffb74d"),
                ("warm new session\n(no pool)", x["warm_new_session_nopool_s"], "#64b5f6"),
                ("warm new session\n(pool, default)", x["warm_new_session_s"], "#1e88e5"),
                ("warm same\nsession", x["warm_same_session_s"], "#66bb6a")]  # fmt: skip
        panels.append((f"XL: 5 services, {gib:.1f} GiB, {x['files'] // 1000}k files", bars, 20.0))
    return panels


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = _bars(results)
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.6 * len(panels)), dpi=110, squeeze=False)
    for ax, (title, bars, target) in zip(axes[:, 0], panels, strict=True):
        shown = [(label, value or 0.0, colour) for label, value, colour in bars][::-1]
        drawn = ax.barh([b[0] for b in shown], [b[1] for b in shown], color=[b[2] for b in shown])
        for bar, (_, value, _) in zip(drawn, shown, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.1f} s", va="center")
        ax.axvline(target, color="#e53935", linestyle="--", linewidth=1)
        ax.text(target, -0.9, f" {target:.0f} s target", color="#e53935", fontsize=8)
        ax.set_title(f"composecache {title}: `up --build -d` ({results.get('started', '')[:10]})", fontsize=10)
        ax.set_xlim(0, max(b[1] for b in shown) * 1.18)
    axes[-1, 0].set_xlabel("seconds (median; lower is better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: dict[str, Any], out: Path) -> None:
    """out is a path stem: writes out.json, out.md and out.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    ordered = {key: results[key] for key in HEADLINE_KEYS if key in results}
    ordered.update({key: value for key, value in results.items() if key not in ordered})
    out.with_suffix(".json").write_text(json.dumps(ordered, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, out.with_suffix(".png").name))
    chart(results, out.with_suffix(".png"))
