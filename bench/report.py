"""The bench's outputs: latest.json (everything), latest.md (the table), latest.png (the chart)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

HEADLINE_KEYS = ("cold_s", "warm_new_session_s", "warm_new_session_unseeded_s", "warm_same_session_s", "tarball_s",
                 "overhead_ms", "shim_passthrough_ms", "ratios", "targets")  # fmt: skip

TARGET_WARM_S = 60.0
TARGET_WARM_OVER_COLD = 0.10
TARGET_WARM_OVER_TARBALL = 0.8
TARGET_OVERHEAD_MS = 150.0


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
    targets = {
        "warm_new_session_under_60s": warm < TARGET_WARM_S,
        "warm_new_session_at_most_10pct_of_cold": (ratios["warm_new_session_over_cold"] or 1) <= TARGET_WARM_OVER_COLD,
        "warm_new_session_at_most_0.8x_tarball": (ratios["warm_new_session_over_tarball"] or 1)
        <= TARGET_WARM_OVER_TARBALL,
        "overhead_under_150ms": overhead < TARGET_OVERHEAD_MS,
    }
    return {
        "cold_s": cold,
        "warm_new_session_s": warm,
        "warm_new_session_unseeded_s": unseeded,
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


def markdown(results: dict[str, Any]) -> str:
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
        f"# Flagship benchmark ({results.get('started', '')})",
        "",
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
        "",
        "Runs (seconds): cold "
        + ", ".join(map(str, results["cold"]["runs_s"]))
        + "; warm new session seeded "
        + ", ".join(map(str, results["warm_new_session"]["seeded"]["runs_s"]))
        + "; unseeded "
        + ", ".join(map(str, results["warm_new_session"]["unseeded"]["runs_s"]))
        + "; same session "
        + ", ".join(map(str, results["warm_same_session"]["runs_s"]))
        + "; tarball load "
        + ", ".join(map(str, results["tarball"]["load_runs_s"]))
        + " + up "
        + ", ".join(map(str, results["tarball"]["up_runs_s"]))
        + ".",
        "",
        "![flagship benchmark](latest.png)",
        "",
    ]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = ["cold", "tarball\n(load + up)", "warm new session\n(no seeding)", "warm new session\n(seeded, default)",
              "warm same\nsession"]  # fmt: skip
    values = [results["cold_s"], results["tarball_s"], results["warm_new_session_unseeded_s"],
              results["warm_new_session_s"], results["warm_same_session_s"]]  # fmt: skip
    colors = ["#9e9e9e", "#ffb74d", "#90caf9", "#1e88e5", "#66bb6a"]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    bars = ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for bar, value in zip(bars, values[::-1], strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:.1f} s", va="center")
    ax.axvline(TARGET_WARM_S, color="#e53935", linestyle="--", linewidth=1)
    ax.text(TARGET_WARM_S, -0.9, " 60 s target", color="#e53935", fontsize=8)
    ax.set_xlabel("seconds (median; lower is better)")
    ax.set_title(f"composecache flagship: `up --build -d` of a 4-service stack ({results.get('started', '')[:10]})")
    ax.set_xlim(0, max(values) * 1.18)
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
    out.with_suffix(".md").write_text(markdown(results))
    chart(results, out.with_suffix(".png"))
