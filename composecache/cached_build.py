"""The one build lifecycle every front-end shares (compose's override, bake, docker build).

    reserve imports and exports for the requests        CachedBuild.prepare
    -> prepare the session daemon                        prepare_session_daemon (seeding, the pool)
    -> run the real tool, with recovery                  CachedBuild.run_with_recovery (publishing while it runs)
    -> publish every export that completed, clean up     CachedBuild.finish

`run` walks these steps; a front-end only says how its tool runs with the
slots' cache flags (a `BuildTool`).  Fail open at every step: a cache problem
becomes one warning line and the build goes on without (that part of) the cache.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from composecache.errors import CacheUnavailable, StrictFallback, strict_mode
from composecache.output import Output, printable
from composecache.session import seeding
from composecache.settings import Settings
from composecache.store import ImportSpec, PublishOutcome, Staging, Store
from composecache.store.layout import Layout

if TYPE_CHECKING:
    from composecache.remote.tier import RemoteTier
    from composecache.runner import Background
    from composecache.session.pool import SnapshotListing


class BuildTool(abc.ABC):
    """What differs between front-ends: how the real tool runs with the slots' cache flags."""

    # False when a second run cannot repeat the first (a build context read from stdin).
    may_run_again = True

    @abc.abstractmethod
    def run(self, build: CachedBuild) -> int:
        """Run the real tool once, its cache flags made from `build.slots` (a retry drops imports)."""

    @abc.abstractmethod
    def preview(self, build: CachedBuild) -> int:
        """--dry-run: show what would run, run nothing."""

    def stale(self, build: CachedBuild) -> bool:
        """After a failed run: True when composecache's own input was out of date and has been mended."""
        return False


def run(
    settings: Settings,
    output: Output,
    requests: Sequence[CacheRequest],
    tool: BuildTool,
    *,
    env: Mapping[str, str],
    daemon: seeding.DaemonStore | str | None = None,
    export: bool = True,
    no_export_reason: str = "",
    summary: bool = True,
    snapshots: SnapshotListing | None = None,
) -> int:
    """Build with the shared cache: reserve -> prepare the session daemon -> run with recovery -> publish.

    daemon: the session daemon's content store for the `docker` driver (a container builder has its
    own), why it cannot be used (a string, shown with -v), or None.  snapshots: that daemon's
    snapshot listing, started early by the front-end (session/pool.py, SnapshotListing).
    """
    build = CachedBuild(settings, output, export=export, no_export_reason=no_export_reason)
    build.prepare(requests)
    if settings.dry_run:
        try:
            return tool.preview(build)
        finally:
            build.finish(summary=False)
    undo = prepare_session_daemon(build, daemon, env, output, snapshots)
    try:
        if tool.may_run_again:
            status = build.run_with_recovery(lambda: tool.run(build), lambda: tool.stale(build))
        else:
            status = tool.run(build)
    finally:
        build.finish(summary=summary)
        for release in reversed(undo):
            release()
    build.raise_if_strict()
    return status


def prepare_session_daemon(
    build: CachedBuild,
    daemon: seeding.DaemonStore | str | None,
    env: Mapping[str, str],
    output: Output,
    snapshots: SnapshotListing | None = None,
) -> list[Callable[[], None]]:
    """THE HOOK for readying the session daemon before the real tool runs; returns what to undo after it.

    The unpacked-layer pool registers the imported layers' snapshots and links their
    blobs (session/pool.py), then seeding copies the blobs the pool did not link
    (session/seeding.py).  Each step fails open by itself (one line, then the normal
    import path) and hands back a release callable that never raises.  A read-only
    store never fills the pool.
    """
    from composecache.session import pool as layer_pool

    undo: list[Callable[[], None]] = []
    if build.store is None:
        return undo
    prepared = layer_pool.prepare_daemon(build.store.layout, build.imported_digests(), daemon, env, output,
                                         fill=build.store.writable, fall_back=build._fall_back_once,
                                         listing=snapshots)  # fmt: skip
    if prepared is not None:
        undo.append(prepared.release)
    return undo


def extra_cache_entries(request: CacheRequest, settings: Settings) -> tuple[list[str], list[str]]:
    """THE HOOK for cache sources and destinations beyond the local store: (cache_from, cache_to) entries.

    The local store's entries are reserved by CachedBuild.prepare; every front-end passes these
    on through CacheSlot.cache_from_entries / cache_to_entries.  The registry tier
    (composecache/remote/) does not add static entries here: which scopes it imports depends on
    what the local store holds and what the registry answered, so CachedBuild.prepare appends
    its `type=registry,...` imports to `extra_from` after the local reservation, and it pushes
    published scopes itself after the build (no second cache_to: the build never waits for it).
    """
    return [], []


class CacheRequest(NamedTuple):
    """What one service (or image) wants from the store."""

    key: str  # the service or image name, for messages
    export_scope: str
    import_scopes: tuple[str, ...]  # in order of preference; every one that exists is imported
    mode: str = "max"


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class CacheSlot:
    """What the store gave one request, and what became of its export."""

    staging: Staging | None = None
    outcome: PublishOutcome | None = None
    export_note: str | None = None  # why nothing is exported, when it is not

    def __init__(self, request: CacheRequest, *, cache_from: list[str] | None = None, cache_to: str | None = None,
                 extra_from: list[str] | None = None) -> None:  # fmt: skip
        self.request = request
        self.cache_to = cache_to
        self.cache_from: list[str] = cache_from or []
        self.imported_from: list[str] = []
        self.imports: list[ImportSpec] = []  # leases held until finish()
        self.remote_imports: list[tuple[str, str]] = []  # (scope, cache_from) from the registry
        self.extra_from: list[str] = extra_from or []  # from extra_cache_entries
        self.extra_to: list[str] = []

    @property
    def cache_from_entries(self) -> list[str]:
        """Every cache import the build gets: the local store's (pinned by digest), then the extra ones."""
        return [*self.cache_from, *self.extra_from]

    @property
    def cache_to_entries(self) -> list[str]:
        """Every cache export the build writes: the local staging directory, then the extra ones."""
        return [*([self.cache_to] if self.cache_to else []), *self.extra_to]

    @property
    def published(self) -> bool:
        return self.outcome is not None and self.outcome.published


class CachedBuild:
    def __init__(self, settings: Settings, output: Output, *, export: bool = True, no_export_reason: str = "") -> None:
        self.settings = settings
        self.output = output
        self.export = export and not settings.read_only
        self.no_export_reason = no_export_reason or ("read-only" if settings.read_only else "")
        self.store: Store | None = None
        self.slots: dict[str, CacheSlot] = {}
        self._warned: set[str] = set()
        self.strict_failures: list[str] = []
        self.remote: RemoteTier | None = None
        if settings.remote and not settings.disabled:  # the registry tier (composecache/remote/): only when asked
            from composecache.remote.tier import RemoteTier

            self.remote = RemoteTier.from_settings(settings, output, fall_back=self._fall_back_once)

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.output.warn(message)

    def _fall_back_once(self, message: str) -> None:
        """A cache problem this build fails open on: one line (`Output.fall_back`).

        Under COMPOSECACHE_STRICT=1 the line is shown and the build still runs and cleans up;
        `raise_if_strict` then fails the run, so no test passes on this path.
        """
        if message in self._warned:
            return
        self._warned.add(message)
        if strict_mode():
            self.strict_failures.append(message)
            self.output.warn(message)
        else:
            self.output.fall_back(message)

    def raise_if_strict(self) -> None:
        if self.strict_failures:
            raise StrictFallback(f"strict mode: {self.strict_failures[0]}")

    def open_store(self) -> Store | None:
        try:
            self.store = Store.open(
                self.settings.cache_dir,
                namespace=self.settings.namespace,
                read_only=self.settings.read_only or self.settings.dry_run,
                on_notice=self._warn_once,
                on_wait=self.output.info,  # contention (gc, a publish) is no cache problem: not a warning
            )
        except (CacheUnavailable, OSError) as exc:
            if self.settings.dry_run and not self.settings.cache_dir.exists():
                # A preview of a store that the real run would create.
                self.output.info(f"the cache directory {self.settings.cache_dir} does not exist yet: "
                                 "the real run creates it")  # fmt: skip
                self.store = Store(Layout(self.settings.cache_dir.absolute(), self.settings.namespace),
                                   writable=False, read_only=True, on_notice=self._warn_once,
                                   lock_timeout=0, warnings=[])  # fmt: skip
                return self.store
            self._fall_back_once(f"cache unavailable ({_reason(exc)}); building without it")
            self.store = None
            return None
        for message in self.store.warnings:  # a world-writable cache directory: anyone can plant entries
            self._warn_once(message)
        if self.export and not self.store.writable and not self.settings.dry_run:
            self._warn_once(f"cache directory {self.settings.cache_dir} is not writable: import only")
            self.export = False
            self.no_export_reason = "cache not writable"
        return self.store

    def prepare(self, requests: Sequence[CacheRequest]) -> dict[str, CacheSlot]:
        """Reserve imports and exports; never raises for cache problems."""
        store = self.store if self.store is not None else self.open_store()
        look = self._look_at_registry(requests)
        for request in requests:
            slot = CacheSlot(request)
            self.slots[request.key] = slot
            slot.extra_from, slot.extra_to = extra_cache_entries(request, self.settings)
            if store is None:
                slot.export_note = "cache unavailable"
                continue
            for scope in request.import_scopes:
                try:
                    spec = store.peek_import(scope) if self.settings.dry_run else store.prepare_import(scope)
                except (CacheUnavailable, OSError) as exc:
                    self._fall_back_once(f"{request.key}: cannot import from the cache ({_reason(exc)})")
                    continue
                if spec is not None:
                    slot.imports.append(spec)
                    slot.cache_from.append(spec.cache_from)
                    slot.imported_from.append(scope)
            if not self.export:
                slot.export_note = self.no_export_reason or "export off"
                continue
            try:
                if self.settings.dry_run:
                    slot.cache_to = store.describe_export(request.export_scope, mode=request.mode)
                else:
                    slot.staging = store.prepare_export(request.export_scope, mode=request.mode)
                    slot.cache_to = slot.staging.cache_to
            except (CacheUnavailable, OSError) as exc:
                self._fall_back_once(
                    f"{request.key}: cannot export to the cache ({_reason(exc)}); building without export"
                )
                slot.export_note = "export failed to start"
        if look is not None:
            look.result()
            self._add_registry_imports()
        return self.slots

    def _look_at_registry(self, requests: Sequence[CacheRequest]) -> Background[object] | None:
        """The registry tier's one bounded look, in a thread while the local store is read."""
        if self.remote is None:
            return None
        from composecache.runner import Background

        return Background(self.remote.look, [scope for r in requests for scope in r.import_scopes])

    def _add_registry_imports(self) -> None:
        """Registry imports (through the extra entries) for the scopes the local store lacks."""
        assert self.remote is not None
        for slot in self.slots.values():
            local = {spec.scope: spec.digest for spec in slot.imports}
            slot.remote_imports = self.remote.imports_for(slot.request.import_scopes, local)
            slot.extra_from += [spec for _, spec in slot.remote_imports]

    def run_with_recovery(self, run: Callable[[], int], stale: Callable[[], bool] | None = None) -> int:
        """Run the build; once more without any import that a failed run proved corrupt.

        `run` must build its arguments from the slots each time it is called.  Only an ordinary
        failure is looked into (an interrupted or killed build is not run again).  `stale`, after
        a failure: True when composecache's own input was out of date and has been mended, so
        the failure may be its own: run once more.
        """
        status = run()
        if 0 < status < 128 and self.drop_corrupt_imports():
            status = run()
        if 0 < status < 128 and self.drop_remote_imports():
            status = run()
        if 0 < status < 128 and stale is not None and stale():
            status = run()
        return status

    def drop_corrupt_imports(self) -> bool:
        """After a failed build: re-hash what it imported; True when an import was corrupt.

        BuildKit fails a build that pulls a layer whose content does not match its digest; a
        build without the cache would have succeeded.  The store quarantines what is corrupt
        and the import is dropped from its slot, so the caller can build again without it.
        """
        if self.store is None:
            return False
        checked: dict[str, list[str]] = {}
        for slot in self.slots.values():
            for spec in list(slot.imports):
                if spec.digest not in checked:
                    try:
                        checked[spec.digest] = self.store.recheck_import(spec)
                    except (CacheUnavailable, OSError) as exc:
                        self.output.debug(f"could not re-check the import of {spec.scope}: {_reason(exc)}")
                        checked[spec.digest] = []
                bad = checked[spec.digest]
                if not bad:
                    continue
                more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
                moved = "quarantined it" if self.store.writable else "the cache is read-only"
                self._fall_back_once(f"cache scope {spec.scope} holds a corrupt blob ({bad[0]}{more}) that failed the "
                                f"build; {moved}; building again without importing it")  # fmt: skip
                slot.imports.remove(spec)
                slot.cache_from.remove(spec.cache_from)
                slot.imported_from.remove(spec.scope)
                self.store.release_import(spec)
        return any(checked.values())

    def drop_remote_imports(self) -> bool:
        """After a failed build that imported from the registry: drop those imports (True if any).

        What a registry serves is checked by BuildKit as it pulls; a registry that fails or lies in
        the middle of a build must not fail a build that succeeds without it.
        """
        dropped = False
        for slot in self.slots.values():
            for _, spec in slot.remote_imports:
                slot.extra_from.remove(spec)
                dropped = True
            slot.remote_imports = []
        if dropped and self.remote is not None:
            from composecache.remote.client import RemoteError

            self.remote.fail(RemoteError("server", "a build that imported from it failed"),
                             "building again without the registry")  # fmt: skip
        return dropped

    def imported_digests(self) -> list[str]:
        """The digest of every cache manifest this build imports, each once (for seeding)."""
        return list(dict.fromkeys(spec.digest for slot in self.slots.values() for spec in slot.imports))

    def publish_ready(self) -> None:
        """Publish every export that completed since the last call (a long `up` or `watch`)."""
        for slot in self.slots.values():
            if slot.staging is not None:
                self._publish(slot, keep=True)
                if self.remote is not None:
                    self.remote.observe(slot.request.key, slot.staging.path, slot.outcome is not None)

    def _publish(self, slot: CacheSlot, *, keep: bool) -> None:
        assert self.store is not None and slot.staging is not None
        try:
            if not slot.staging.has_new_export():
                return
            outcome = self.store.publish(slot.staging, keep=keep)
        except (CacheUnavailable, OSError) as exc:
            self._fall_back_once(f"{slot.request.key}: could not publish the cache export ({_reason(exc)})")
            return
        if outcome.published or slot.outcome is None or not slot.outcome.published:
            slot.outcome = outcome
        if outcome.failed:
            self._fall_back_once(f"{slot.request.key}: cache export {outcome.reason}")
        elif not outcome.published:
            self.output.debug(f"{slot.request.key}: export not published: {outcome.reason}")

    def finish(self, *, summary: bool = True) -> None:
        """Publish what is left, release every staging directory, say what happened."""
        for slot in self.slots.values():
            if self.store is None:
                continue
            for spec in slot.imports:
                self.store.release_import(spec)
            if slot.staging is None:
                continue
            self._publish(slot, keep=True)
            if self.remote is not None:
                self.remote.observe(slot.request.key, slot.staging.path, slot.outcome is not None)
            if slot.outcome is None and slot.staging.export_incomplete():
                self._fall_back_once(f"{slot.request.key}: the cache export did not complete (see the build log); "
                                "nothing was published")  # fmt: skip
                slot.export_note = "export incomplete"
            try:
                self.store.discard(slot.staging)
            except (CacheUnavailable, OSError) as exc:
                self._fall_back_once(f"could not remove a staging directory ({_reason(exc)})")
            slot.staging = None
        self._push_to_registry()
        if summary:
            for line in self.summary_lines():
                self.output.info(line)

    def _push_to_registry(self) -> None:
        """The registry tier pushes what this build published (waiting at most as long as the export took)."""
        if self.remote is None or not self.export:
            return
        published = {slot.request.export_scope: slot.outcome.digest for slot in self.slots.values()
                     if slot.outcome is not None and slot.outcome.published and slot.outcome.digest}  # fmt: skip
        self.remote.push(published)

    def summary_lines(self) -> list[str]:
        lines = []
        for slot in self.slots.values():
            sources = [*slot.imported_from, *(f"registry {scope}" for scope, _ in slot.remote_imports)]
            imported = f"import from {', '.join(sources)}" if sources else "cold (nothing to import)"
            if slot.outcome is not None and slot.outcome.published:
                exported = "exported"
            elif slot.outcome is not None:
                exported = f"not exported ({slot.outcome.reason})"
            elif slot.export_note:
                exported = f"not exported ({slot.export_note})"
            else:
                exported = "nothing exported (not built)"
            line = f"{slot.request.key}: scope {slot.request.export_scope}: {imported}; {exported}"
            lines.append(printable(line))  # one line, whatever the names hold
        return lines


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CacheUnavailable):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
    return str(exc)
