"""The shared cache store: what the build front-ends call.

    store = Store.open(cache_dir, namespace)
    spec = store.prepare_import(scope)        # cache_from, pinned by digest, or None
    staging = store.prepare_export(scope)     # cache_to, a private locked staging dir
    ... run the build ...
    outcome = store.publish(staging)          # atomic, checked, never raises for cache problems

Concurrency rules (docs/store.md): imports are pinned with
`digest=` so BuildKit never reads a scope's index.json nor takes its lock;
every export goes to private staging; publishing happens under composecache's
own store lock after checking that every blob the new manifest names exists,
and the store lock is never held while a build runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from composecache.errors import CacheUnavailable, ComposecacheError, UsageError
from composecache.store import layout as layout_mod
from composecache.store import oci, scopes
from composecache.store.layout import Layout
from composecache.store.locking import HeldLock, LockTimeout, acquire
from composecache.store.naming import safe_dirname
from composecache.store.safefs import UnsafePath, describe_os_error, read_small_file
from composecache.store.staging import Staging, create_staging, release_lease, remove_staging, take_lease

if TYPE_CHECKING:  # the maintenance modules load only for `composecache cache ...`, not on every build
    from composecache.store.gc import GcReport, PruneReport
    from composecache.store.roots import Progress
    from composecache.store.stats import StoreStats
    from composecache.store.verify import VerifyReport

Notice = Callable[[str], None]
MODES = ("max", "min")
# cache_to keys the store decides: `reset=true` would delete every shared blob the export does not
# reference, through the staging `blobs` link (buildx >= 0.35, local exporter).
RESERVED_EXPORT_KEYS = frozenset({"type", "dest", "src", "mode", "ignore-error", "reset"})
DEFAULT_LOCK_TIMEOUT_S = 60.0


def spec_string(fields: list[tuple[str, str]]) -> str:
    """`k=v,k=v` as buildx parses it (a CSV record): quote fields holding `,` or `"`."""
    parts = []
    for key, value in fields:
        part = f"{key}={value}"
        if any(ch in part for ch in ',"\n\r'):
            part = '"' + part.replace('"', '""') + '"'
        parts.append(part)
    return ",".join(parts)


class ImportSpec(NamedTuple):
    scope: str
    path: Path
    digest: str
    cache_from: str
    lease: Path | None = None


class PublishOutcome(NamedTuple):
    scope: str
    published: bool
    reason: str
    digest: str | None = None
    failed: bool = False  # the store could not be written (not merely "nothing to publish")


class Store:
    """One namespace of a shared cache directory (see layout.py for what lives where)."""

    def __init__(
        self,
        layout: Layout,
        *,
        writable: bool,
        read_only: bool,
        on_notice: Notice | None,
        lock_timeout: float,
        warnings: list[str],
        on_wait: Notice | None = None,
    ) -> None:
        self.layout = layout
        self.writable = writable
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.warnings = warnings
        self._on_notice = on_notice
        self._on_wait = on_wait  # "waiting for the lock": contention, not a problem (default: on_notice)
        self._lock_timed_out = False

    @classmethod
    def open(
        cls,
        root: Path,
        namespace: str = "default",
        read_only: bool = False,
        *,
        on_notice: Notice | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        on_wait: Notice | None = None,
    ) -> Store:
        """Open (creating when writable) the store at `root`; CacheUnavailable if it is unusable.

        A readable store we may not write to (read-only mount, EACCES, EROFS)
        opens with writable False.  read_only=True never writes anything.
        """
        try:
            safe_dirname(namespace)
        except ValueError as exc:
            raise CacheUnavailable(f"bad namespace {namespace!r}: {exc}") from exc
        layout = Layout(Path(os.path.abspath(root)), namespace)
        if read_only:
            if not layout.base.exists():
                raise CacheUnavailable(f"the cache directory {layout.base} does not exist")
            layout_mod.check_existing(layout)
            writable = False
        else:
            writable = layout_mod.create(layout)
        return cls(
            layout,
            writable=writable,
            read_only=read_only,
            on_notice=on_notice,
            lock_timeout=lock_timeout,
            warnings=layout_mod.warnings_for(layout),
            on_wait=on_wait,
        )

    @property
    def root(self) -> Path:
        """The namespace root actually used (`<cache dir>/ns/<namespace>`)."""
        return self.layout.root

    @property
    def base(self) -> Path:
        return self.layout.base

    @property
    def namespace(self) -> str:
        return self.layout.namespace

    def notice(self, message: str) -> None:
        if self._on_notice is not None:
            self._on_notice(message)

    @contextlib.contextmanager
    def locked(self, *, wait_forever: bool = False) -> Iterator[HeldLock]:
        """The store lock (build paths give up after lock_timeout; maintenance waits).

        Once a wait has timed out, later build-path attempts only try: a holder that does not let
        go (a `cache gc` suspended with Ctrl-Z) must cost a build one timeout, not one per scope.
        """
        wait = None if wait_forever else (0.0 if self._lock_timed_out else self.lock_timeout)
        on_wait = None if wait == 0.0 else (self._on_wait or self.notice)
        try:
            held = acquire(self.layout.store_lock, timeout=wait, on_wait=on_wait, what="cache store lock")
        except LockTimeout:
            self._lock_timed_out = True
            raise
        with held:
            yield held

    # --- imports ---------------------------------------------------------------------------------

    def _import_spec(self, scope: str, content: scopes.ScopeContent, lease: Path | None) -> ImportSpec:
        path = self.layout.scope_dir(scope)
        spec = spec_string([("type", "local"), ("src", str(path)), ("digest", content.manifest.digest)])
        return ImportSpec(scope, path, content.manifest.digest, spec, lease)

    def peek_import(self, scope: str) -> ImportSpec | None:
        """What prepare_import would return, writing nothing (for --dry-run and read-only stores)."""
        try:
            content = scopes.inspect_scope(self.layout, self.layout.scope_dir(scope))
        except scopes.ScopeProblem as problem:
            self.notice(f"not importing cache scope {scope!r}: {problem} {problem.digest or ''}".rstrip())
            return None
        except OSError as exc:
            raise CacheUnavailable(f"cannot read cache scope {scope!r}: {describe_os_error(exc)}") from exc
        return None if content is None else self._import_spec(scope, content, None)

    def prepare_import(self, scope: str) -> ImportSpec | None:
        """cache_from for `scope` pinned by digest, or None (no valid index: a cold build).

        When writable: checked under the store lock, a lease keeps the
        manifest's blobs through gc until release_import() or process exit,
        the last use is recorded, and a corrupt scope is quarantined.
        """
        if not self.writable:
            return self.peek_import(scope)
        try:
            with self.locked():
                return self._prepare_import_locked(scope)
        except OSError as exc:  # lock timeout, disk trouble: the build can still import, unprotected
            self.notice(f"cache lock unavailable ({describe_os_error(exc)}); importing {scope!r} without a lease")
            return self.peek_import(scope)

    def _prepare_import_locked(self, scope: str) -> ImportSpec | None:
        scope_dir = self.layout.scope_dir(scope)
        try:
            content = scopes.inspect_scope(self.layout, scope_dir)
        except scopes.ScopeProblem as problem:
            self._quarantine_scope(scope_dir, scope, problem)
            return None
        if content is None:
            return None
        lease: Path | None = None
        try:
            lease = take_lease(self.layout, scope, content.manifest)
            scopes.write_record(scope_dir, scope, published=False)
        except OSError as exc:  # recording use is best effort (a full disk must not stop an import)
            self.notice(f"could not record the use of cache scope {scope!r}: {describe_os_error(exc)}")
        return self._import_spec(scope, content, lease)

    def release_import(self, spec: ImportSpec | None) -> None:
        """Let gc reclaim what the import used (also happens when the process exits)."""
        if spec is not None and spec.lease is not None:
            release_lease(spec.lease)

    def recheck_import(self, spec: ImportSpec) -> list[str]:
        """Re-hash every blob `spec` imports; the digests whose content is wrong or gone.

        An import checks sizes only (hashing costs about 5 s per GB), but BuildKit verifies each
        layer it pulls and FAILS the build on a mismatch ("unexpected commit digest"), where the
        same build without the cache succeeds.  So a front-end calls this after a failed build:
        what is corrupt is quarantined (with the scope, if it still names this manifest), and the
        caller builds again without this import.
        """
        manifest_path = self.layout.blob(spec.digest.split(":", 1)[1])
        try:
            data = read_small_file(manifest_path)
        except FileNotFoundError:
            data = b""
        references: list[oci.Descriptor] = []
        bad = []
        if oci.sha256_digest(data) != spec.digest:
            bad.append(spec.digest)
        else:
            with contextlib.suppress(oci.OciError):
                references = oci.manifest_references(data)
        for descriptor in references:
            try:
                if scopes.hash_file(self.layout.blob(descriptor.hex)) != descriptor.digest:
                    bad.append(descriptor.digest)
            except FileNotFoundError:
                bad.append(descriptor.digest)
        if bad and self.writable:
            with self.locked():
                self._quarantine_corrupt_import(spec, bad)
        return bad

    def _quarantine_corrupt_import(self, spec: ImportSpec, bad: list[str]) -> None:
        for digest in bad:
            blob = self.layout.blob(digest.split(":", 1)[1])
            if os.path.lexists(blob):
                scopes.quarantine(self.layout, blob, f"{scopes.WRONG_DIGEST}: failed a build that imported it")
        scope_dir = self.layout.scope_dir(spec.scope)
        try:
            current = oci.select_cache_manifest(read_small_file(scope_dir / scopes.INDEX)).digest
        except (OSError, ValueError):
            return  # republished or gone meanwhile: nothing of this import left to move
        if current == spec.digest:
            reason = f"{scopes.WRONG_DIGEST}: uses corrupt blob {bad[0]}"
            scopes.quarantine(self.layout, scope_dir, reason, spec.scope)

    def _quarantine_scope(self, scope_dir: Path, scope: str, problem: scopes.ScopeProblem) -> None:
        where = ""
        try:
            where = f"; moved to {scopes.quarantine(self.layout, scope_dir, str(problem), scope)}"
        except OSError as exc:
            where = f"; could not quarantine it: {describe_os_error(exc)}"
        with contextlib.suppress(OSError):  # and the blob it blames: no later export would rewrite it
            scopes.quarantine_bad_blob(self.layout, problem)
        self.notice(f"cache scope {scope!r} is corrupt ({problem} {problem.digest or ''}){where}")

    # --- exports ---------------------------------------------------------------------------------

    def _export_fields(self, dest: str, mode: str, options: Mapping[str, str] | None) -> list[tuple[str, str]]:
        if mode not in MODES:
            raise UsageError(f"cache export mode must be one of {', '.join(MODES)}, not {mode!r}")
        fields = [("type", "local"), ("dest", dest), ("mode", mode), ("ignore-error", "true")]
        for key, value in (options or {}).items():
            if key in RESERVED_EXPORT_KEYS:
                self.notice(f"ignoring cache_to option {key}={value}: the store sets it")
            else:
                fields.append((key, value))
        return fields

    def describe_export(self, scope: str, mode: str = "max", options: Mapping[str, str] | None = None) -> str:
        """What prepare_export's cache_to would look like, writing nothing (for --dry-run)."""
        dest = self.layout.staging / f"{safe_dirname(scope)}.<random>"
        return spec_string(self._export_fields(str(dest), mode, options))

    def prepare_export(self, scope: str, mode: str = "max", options: Mapping[str, str] | None = None) -> Staging:
        """A private, locked staging directory to export `scope` into; CacheUnavailable if not possible."""
        if not self.writable:
            raise CacheUnavailable(f"the cache at {self.base} is read-only: not exporting {scope!r}")
        fields = self._export_fields("", mode, options)  # validate before creating anything
        try:
            path, lock = create_staging(self.layout, scope, safe_dirname(scope))
        except OSError as exc:
            raise CacheUnavailable(
                f"cannot prepare a cache export for {scope!r}: {describe_os_error(exc)}",
                hint="free some space (composecache cache gc) or check the cache directory's permissions",
            ) from exc
        fields[1] = ("dest", str(path))
        return Staging(scope, path, spec_string(fields), lock)

    def discard(self, staging: Staging) -> None:
        """Remove a staging directory and release its lock; never raises."""
        if not staging.lock.held:
            return
        try:
            remove_staging(staging.path, staging.lock)
        except OSError as exc:
            self.notice(f"could not remove cache staging {staging.path}: {describe_os_error(exc)}")

    def publish(self, staging: Staging, keep: bool = False) -> PublishOutcome:
        """Make the staged export the scope's cache, or drop it; never raises for cache problems."""
        try:
            outcome = self._publish(staging)
        except (OSError, ValueError, ComposecacheError) as exc:
            reason = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
            outcome = PublishOutcome(staging.scope, False, f"not published: {reason}", failed=True)
        finally:
            if not keep:
                self.discard(staging)
        return outcome

    def _publish(self, staging: Staging) -> PublishOutcome:
        scope = staging.scope
        if not self.writable:
            return PublishOutcome(scope, False, "the cache is read-only")
        if not staging.lock.held:
            return PublishOutcome(scope, False, "the staging directory was already released")
        try:
            manifest = oci.select_cache_manifest(read_small_file(staging.index_path))
        except FileNotFoundError:
            return PublishOutcome(scope, False, "the build exported no cache (no index.json in staging)")
        except oci.OciError as exc:
            return PublishOutcome(scope, False, f"the staged index.json is unusable: {exc}")
        if manifest.digest == staging.published_digest:
            return PublishOutcome(scope, False, "nothing new since the last publish", manifest.digest)
        with self.locked():
            scope_dir = self.layout.scope_dir(scope)
            try:
                scopes.check_blobs(self.layout, [manifest])
                scopes.check_blobs(self.layout, scopes.read_manifest(self.layout, manifest))
            except scopes.ScopeProblem as problem:
                # BuildKit skipped a blob that existed when it looked; gc removed it since. Never
                # publish an index naming a missing blob: this export is dropped, the next one heals.
                # A blob of the wrong size is moved away, or no later export could ever heal it.
                with contextlib.suppress(OSError):
                    if scopes.quarantine_bad_blob(self.layout, problem) is not None:
                        self.notice(f"cache blob {problem.digest} is corrupt ({problem.detail}): quarantined")
                return PublishOutcome(scope, False, f"dropped: {problem.detail} ({problem.digest})", manifest.digest)
            self._make_scope_dir(scope_dir, scope)
            changed = scopes.write_index(scope_dir, manifest)
            scopes.write_record(scope_dir, scope, published=changed)
        staging.published_digest = manifest.digest
        with contextlib.suppress(OSError):  # re-arm: gc protects orphans newer than this (roots.py)
            os.utime(staging.lock.path)
        return PublishOutcome(scope, True, "published", manifest.digest)

    def _make_scope_dir(self, scope_dir: Path, scope: str) -> None:
        try:
            scopes.ensure_scope_dir(self.layout, scope_dir)
        except UnsafePath as exc:  # something planted where the scope belongs: out of the way
            self._quarantine_scope(scope_dir, scope, scopes.ScopeProblem(scopes.UNSAFE, describe_os_error(exc)))
            scopes.ensure_scope_dir(self.layout, scope_dir)

    def scope_exists(self, scope: str) -> bool:
        """Whether `scope` has a published index (not whether it is sound: see prepare_import)."""
        scope_dir = self.layout.scope_dir(scope)
        try:
            return stat.S_ISDIR(os.lstat(scope_dir).st_mode) and stat.S_ISREG(
                os.lstat(scope_dir / scopes.INDEX).st_mode
            )
        except OSError:
            return False

    # --- maintenance (composecache cache ...) ------------------------------------------------------

    def _require_writable(self, what: str) -> None:
        if not self.writable:
            raise CacheUnavailable(f"cannot {what}: the cache at {self.base} is read-only")

    def gc(
        self,
        keep_storage: int | None = None,
        grace_s: float = 0.0,
        progress: Progress | None = None,
        pool_grace_s: float | None = None,
    ) -> GcReport:
        """Mark-and-sweep, then LRU eviction down to keep_storage bytes, then the pool (see gc.py)."""
        self._require_writable("collect garbage")
        with self.locked(wait_forever=True):
            from composecache.store.gc import collect_garbage
            from composecache.store.pool import POOL_GRACE_S

            return collect_garbage(self.layout, keep_storage=keep_storage, grace_s=grace_s, progress=progress,
                                   pool_grace_s=POOL_GRACE_S if pool_grace_s is None else pool_grace_s)  # fmt: skip

    def prune(self, scope: str) -> PruneReport:
        """Remove one scope and the blobs no other scope or running build uses."""
        self._require_writable("prune")
        with self.locked(wait_forever=True):
            from composecache.store.gc import prune_scope

            return prune_scope(self.layout, scope)

    def verify(self, deep: bool = False, progress: Progress | None = None) -> VerifyReport:
        """Report every problem; quarantine what is broken when writable (see verify.py)."""
        locked = (lambda: self.locked(wait_forever=True)) if self.writable else None
        from composecache.store.verify import verify_store

        return verify_store(self.layout, deep=deep, locked=locked, progress=progress)

    def stats(self, progress: Progress | None = None) -> StoreStats:
        from composecache.store.stats import store_stats

        return store_stats(self.layout, progress)
