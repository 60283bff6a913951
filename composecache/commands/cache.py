"""`composecache cache ls|stats|verify|gc|prune`: look after the shared cache store.

Wiring and output only: the work is in composecache.store, which returns data.
Results go to stdout (tables for people, `--json` for machines); warnings and
errors to stderr through Output.  Exit codes: 0 ok, 1 an expected failure
(verify found problems, no such scope, unusable cache), 2 usage.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from composecache.commands.app import APP_OPTIONS, CommandState, state_of
from composecache.commands.app import run as run_app
from composecache.errors import EXIT_FAILURE
from composecache.output import Output, printable
from composecache.settings import Settings
from composecache.store import Store
from composecache.store.gc import GcReport
from composecache.store.roots import Progress
from composecache.store.stats import StoreStats, iso_time
from composecache.store.verify import VerifyReport
from composecache.units import format_age, format_size, parse_duration, parse_size

PROGRESS_AFTER_S = 0.5  # a walk shorter than this shows no progress bar at all

app = typer.Typer(
    name="cache",
    help="Inspect and maintain the shared build cache (every session's builds import from and export to it).",
    epilog="\b\nExamples:\n"
    "  composecache cache ls                           every scope: size, last use, soundness\n"
    "  composecache cache stats --json                 sizes, for machines\n"
    "  composecache cache verify --deep                re-hash every blob; exit 1 on a problem\n"
    "  composecache cache gc --keep-storage 20GB       evict least recently used scopes down to 20 GB\n"
    "  composecache cache prune myproject/api          remove one scope",
    no_args_is_help=True,
    **APP_OPTIONS,  # type: ignore[arg-type]
)


@dataclass
class CacheState(CommandState):
    cache_dir: Path | None = None
    namespace: str | None = None

    def open_store(self, *, writable: bool) -> Store:
        settings = self.settings
        read_only = settings.read_only or not writable
        return Store.open(
            self.cache_dir or settings.cache_dir,
            self.namespace or settings.namespace,
            read_only=read_only,
            on_notice=self.output.warn,
        )


def _state(ctx: typer.Context) -> CacheState:
    state = ctx.find_object(CacheState)
    if state is None:  # run as its own program (python -m composecache.commands.cache)
        base = state_of(ctx)
        state = CacheState(base.settings, base.output)
        ctx.obj = state
    return state


@app.callback()
def _options(
    ctx: typer.Context,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="The shared cache directory (default: COMPOSECACHE_DIR).")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="The namespace (default: COMPOSECACHE_NAMESPACE).")
    ] = None,
) -> None:
    state = _state(ctx)
    state.cache_dir = cache_dir or state.cache_dir
    state.namespace = namespace or state.namespace


@contextmanager
def _progress(output: Output) -> Iterator[Progress | None]:
    """A rich progress display on a terminal (stderr), shown only once a walk takes a while."""
    if output.quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    bar = RichProgress(console=Console(stderr=True), transient=True)
    tasks: dict[str, TaskID] = {}
    started = time.monotonic()

    def update(phase: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            if time.monotonic() - started < PROGRESS_AFTER_S:
                return
            bar.start()
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _ago(timestamp: float | None) -> str:
    return "never" if not timestamp else f"{format_age(time.time() - timestamp)} ago"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


@app.command("ls")
def list_scopes(ctx: typer.Context) -> None:
    """List scopes: size, last use, and whether they are sound; then quarantined entries."""
    state = _state(ctx)
    stats = state.open_store(writable=False).stats()
    if not stats.scopes and not stats.quarantine:
        print(f"no cache scopes in {stats.root}")
        return
    rows = [["SCOPE", "SIZE", "LAST USED", "STATUS"]]
    # Names and reasons were written by other sessions: never raw control characters on a terminal.
    rows += [[printable(s.name), format_size(s.bytes), _ago(s.last_used), s.problem or "ok"] for s in stats.scopes]
    rows += [
        [printable(q.name or q.path.name), "-", _ago(q.since), printable(f"quarantined: {q.reason}")]
        for q in stats.quarantine
    ]
    print("\n".join(_table(rows)))
    print(f"{len(stats.scopes)} scopes, {format_size(stats.bytes)} in {stats.blobs} blobs in {stats.root}")
    if stats.pool.entries or stats.pool.broken:
        print(_pool_line(stats))


def _pool_line(stats: StoreStats) -> str:
    pool = stats.pool
    broken = f", {pool.broken} broken (verify moves them aside)" if pool.broken else ""
    return (f"pool: {pool.entries} unpacked layers, {format_size(pool.bytes)} in {pool.files} files, "
            f"used by {pool.sessions} sessions{broken}")  # fmt: skip


def _stats_lines(stats: StoreStats) -> list[str]:
    orphans = f"{format_size(stats.orphan_bytes)} in {stats.orphan_blobs} blobs no scope uses"
    if stats.in_flight_bytes:
        orphans += f" ({format_size(stats.in_flight_bytes)} of it used by running builds)"
    lines = [
        f"cache:      {stats.root} (namespace {stats.namespace})",
        f"size:       {format_size(stats.bytes)} in {stats.blobs} blobs, each stored once",
        f"orphans:    {orphans}",
        f"scopes:     {len(stats.scopes)}",
        f"builds:     {stats.staging_live} exporting, {stats.imports_live} importing now",
    ]
    if stats.staging_dead:
        lines.append(f"leftovers:  {stats.staging_dead} staging dirs of killed builds (gc removes them)")
    if stats.quarantine:
        lines.append(f"quarantine: {len(stats.quarantine)} entries (see `composecache cache ls`)")
    lines.append(f"{'pool:':<12}" + _pool_line(stats).removeprefix("pool: "))
    return lines


@app.command("stats")
def stats_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Sizes: the whole store (each blob once), each scope (every blob it uses), orphans."""
    state = _state(ctx)
    with _progress(state.output) as progress:
        stats = state.open_store(writable=False).stats(progress)
    if as_json:
        value = stats.to_json()
        if state.settings.remote:
            from composecache.remote import report

            value["remote"] = report.stats_json(state.settings, [scope.name for scope in stats.scopes])
        else:
            value["remote"] = None
        _print_json(value)
    else:
        print("\n".join(_stats_lines(stats)))
        if state.settings.remote:
            print(f"remote:     {state.settings.remote} (the registry tier: composecache doctor checks it)")


def _verify_json(report: VerifyReport) -> dict[str, Any]:
    return {
        "sound": report.sound,
        "deep": report.deep,
        "scopes_checked": report.scopes_checked,
        "pool_entries_checked": report.pool_entries_checked,
        "blobs_hashed": report.blobs_checked,
        "bytes_hashed": report.bytes_hashed,
        "problems": [
            {"scope": p.scope, "digest": p.digest, "kind": p.kind, "detail": p.detail} for p in report.problems
        ],
        "quarantined_now": [str(path) for path in report.quarantined],
        "quarantine": [
            {"path": str(q.path), "name": q.name, "reason": q.reason, "since": iso_time(q.since)}
            for q in report.quarantine
        ],
    }


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    deep: Annotated[
        bool,
        typer.Option(
            "--deep", help="Also re-hash every blob (about 5 s per GB) and compare every pool layer with its blob."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check every scope and blob; exit 1 when anything is wrong (broken entries are quarantined)."""
    state = _state(ctx)
    with _progress(state.output) as progress:
        report = state.open_store(writable=True).verify(deep=deep, progress=progress)
    if as_json:
        _print_json(_verify_json(report))
    else:
        for problem in report.problems:
            where = f"scope {problem.scope!r}" if problem.scope is not None else "store"
            print(printable(f"{where}: {problem.kind} {problem.digest or ''}: {problem.detail}".replace("  ", " ")))
        for path in report.quarantined:
            print(f"moved to quarantine: {path}")
        hashed = f", {report.blobs_checked} blobs re-hashed ({format_size(report.bytes_hashed)})" if deep else ""
        verdict = "sound" if report.sound else f"{len(report.problems)} problem(s)"
        pool = f", {report.pool_entries_checked} pool layers" if report.pool_entries_checked else ""
        print(f"verified {report.scopes_checked} scopes{pool}{hashed}: {verdict}")
    if not report.sound:
        raise typer.Exit(EXIT_FAILURE)


def _size_option(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _duration_option(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _gc_json(report: GcReport, pool_grace_s: float) -> dict[str, Any]:
    return {
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "keep_storage": report.keep_storage,
        "grace_s": report.grace_s,
        "fits": report.fits,
        "blobs_removed": report.blobs_removed,
        "bytes_removed": report.bytes_removed,
        "scopes_evicted": report.scopes_evicted,
        "scopes_quarantined": report.scopes_quarantined,
        "staging_reclaimed": report.staging_reclaimed,
        "staging_live": report.staging_live,
        "imports_live": report.leases_live,
        "quarantine_removed": report.quarantine_removed,
        "pool": {
            "pool_grace_s": pool_grace_s,
            "entries_removed": report.pool.entries_removed,
            "bytes_removed": report.pool.bytes_removed,
            "entries_kept_in_use": report.pool.entries_kept_in_use,
            "staging_reclaimed": report.pool.staging_reclaimed,
            "quarantine_removed": report.pool.quarantine_removed,
            "records_expired": report.pool.records_expired,
        },
    }


@app.command("gc")
def gc_command(
    ctx: typer.Context,
    keep_storage: Annotated[
        str | None, typer.Option("--keep-storage", help="Evict least recently used scopes down to SIZE (10GB, 500MiB).")
    ] = None,
    grace: Annotated[
        str, typer.Option("--grace", help="Keep blobs and scopes younger than this (0, 30s, 10m, 24h, 7d).")
    ] = "1h",
    pool_grace: Annotated[
        str,
        typer.Option("--pool-grace", help="Keep pool layers (and blobs) a session registered within this (7d)."),
    ] = "7d",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Remove unused blobs and dead staging, then evict scopes until the store fits --keep-storage."""
    keep = None if keep_storage is None else _size_option(keep_storage)
    grace_s = _duration_option(grace)
    pool_grace_s = _duration_option(pool_grace)
    state = _state(ctx)
    with _progress(state.output) as progress:
        report = state.open_store(writable=True).gc(keep_storage=keep, grace_s=grace_s, progress=progress,
                                                    pool_grace_s=pool_grace_s)  # fmt: skip
    if as_json:
        _print_json(_gc_json(report, pool_grace_s))
        return
    print(
        f"gc: removed {report.blobs_removed} blobs ({format_size(report.bytes_removed)}), "
        f"evicted {len(report.scopes_evicted)} scopes, reclaimed {report.staging_reclaimed} staging dirs; "
        f"store {format_size(report.bytes_before)} -> {format_size(report.bytes_after)}"
    )
    if report.pool.entries_removed or report.pool.entries_kept_in_use:
        removed = f"{report.pool.entries_removed} unpacked layers ({format_size(report.pool.bytes_removed)})"
        print(f"pool: removed {removed}, kept {report.pool.entries_kept_in_use} that sessions use")
    if report.scopes_evicted:
        print(printable("evicted: " + ", ".join(report.scopes_evicted)))
    if not report.fits and keep is not None:
        state.output.warn(
            f"the store is still {format_size(report.bytes_after)}, above --keep-storage {format_size(keep)}: "
            "the rest is used by running builds or by scopes used within the grace period"
        )


@app.command("prune")
def prune_command(
    ctx: typer.Context,
    scope: Annotated[str, typer.Argument(help="The scope to remove (as `ls` shows it).")],
) -> None:
    """Remove one scope, and the blobs no other scope uses."""
    state = _state(ctx)
    report = state.open_store(writable=True).prune(scope)
    if not report.found:
        state.output.error(f"no cache scope {scope!r}", hint="`composecache cache ls` lists the scopes")
        raise typer.Exit(EXIT_FAILURE)
    print(f"pruned scope {report.scope!r}: freed {format_size(report.bytes_removed)} ({report.blobs_removed} blobs)")


@app.command("fill")
def fill_command(
    ctx: typer.Context,
    scopes: Annotated[list[str] | None, typer.Argument(help="Scopes to fill from (default: every scope).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Unpack the layers of scopes into the layer pool now (a build fills what it misses by itself)."""
    import os

    from composecache.store import pool_maintenance as pool
    from composecache.store import scopes as store_scopes
    from composecache.store.gc import find_scope_dir

    state = _state(ctx)
    store = state.open_store(writable=True)
    if not store.writable:
        state.output.error(f"cannot fill the pool: the cache at {store.base} is read-only")
        raise typer.Exit(EXIT_FAILURE)
    if os.geteuid() != 0:
        state.output.error("filling the layer pool needs root", hint="pool trees hold root-owned files and devices")
        raise typer.Exit(EXIT_FAILURE)
    wanted = [find_scope_dir(store.layout, name)[1] for name in scopes] if scopes else None
    if wanted is not None and None in wanted:
        state.output.error(f"no cache scope {scopes[wanted.index(None)]!r}",  # type: ignore[index]
                           hint="`composecache cache ls` lists the scopes")  # fmt: skip
        raise typer.Exit(EXIT_FAILURE)
    manifests = []
    for scope_dir in wanted if wanted is not None else list(store_scopes.scope_dirs(store.layout)):
        try:
            content = store_scopes.inspect_scope(store.layout, scope_dir, check_sizes=False)  # type: ignore[arg-type]
        except (store_scopes.ScopeProblem, OSError):
            continue  # verify reports broken scopes
        if content is not None:
            manifests.append(content.manifest.digest)
    report = pool.fill_scopes(store.layout, manifests, on_wait=state.output.info)
    for line in report.refused:
        state.output.warn(printable(f"not pooled: {line}"))
    if as_json:
        _print_json({"layers": report.layers, "present": report.present, "filled": report.filled,
                     "bytes": report.bytes, "files": report.files, "seconds": round(report.seconds, 3),
                     "refused": report.refused})  # fmt: skip
        return
    print(f"pool: filled {report.filled} of {report.layers} layers ({format_size(report.bytes)} in {report.files} "
          f"files) in {report.seconds:.1f}s; {report.present} were there already")  # fmt: skip


def main(args: list[str], settings: Settings, output: Output) -> int:
    """Run `composecache cache ARGS...`; returns the exit code (0 ok, 1 expected failure, 2 usage)."""
    return run_app(app, "cache", args, CacheState(settings, output))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Settings.from_env(), Output()))
