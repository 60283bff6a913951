"""The registry tier of one build: what to import from the registry, and the push afterwards.

    probe (one bounded look at the registry: each scope's tag -> digest)
    -> import: a scope the local store lacks, or holds in another version, is
       also imported from the registry (`type=registry,ref=<repo>:<tag>@<digest>`,
       pinned like local imports), so the build's local export fills this host's store
    -> the build runs; the local export and publish are unchanged
    -> push: every scope this build published goes to the registry (push.py),
       waited for only as long as the build's own export took.

Fail open: the first registry problem (down, slow, 5xx, garbage, credentials)
is one `fall_back` line and the rest of this run does without the registry.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from composecache.errors import UsageError
from composecache.output import Output
from composecache.remote import credentials
from composecache.remote.client import GARBAGE, SERVER, RegistryClient, RemoteError
from composecache.remote.config import Remote, parse_remote
from composecache.remote.naming import scope_tag
from composecache.remote.push import MIN_WAIT_S, BackgroundPush, PushJob, PushResult
from composecache.settings import Settings

PROBE_DEADLINE_S = 5.0  # the whole look at the registry before a build, however many scopes
PROBE_RETRIED = frozenset({SERVER, GARBAGE})  # tried once more (a timeout would only spend the deadline)
PROBE_RETRY_DELAY_S = 0.2
STAGING_ENTRIES_OF_OURS = {"blobs"}


@dataclass
class ExportTimer:
    """When BuildKit began and finished writing one staging export (seen on the build's ticks)."""

    began: float | None = None
    ended: float | None = None


@dataclass
class Probe:
    digests: dict[str, str | None] = field(default_factory=dict)  # scope -> the tag's digest (None: no tag)
    error: RemoteError | None = None


class RemoteTier:
    def __init__(self, remote: Remote, settings: Settings, output: Output, env: Mapping[str, str],
                 fall_back: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.remote = remote
        self.fall_back = fall_back or output.fall_back  # the build's one fail-open line (strict-aware)
        self.settings = settings
        self.output = output
        self.env = dict(env)
        self.namespace = settings.namespace
        self.failed: str | None = None  # why this run does without the registry
        self.probe: Probe | None = None
        self.timers: dict[str, ExportTimer] = {}
        self.push_lines: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings, output: Output, env: Mapping[str, str] | None = None, *,
                      fall_back: Callable[[str], None] | None = None) -> RemoteTier | None:  # fmt: skip
        if not settings.remote:
            return None
        try:
            remote = parse_remote(settings.remote, insecure=settings.remote_insecure)
        except UsageError as exc:
            (fall_back or output.fall_back)(f"COMPOSECACHE_REMOTE: {exc.message}; building without the registry")
            return None
        return cls(remote, settings, output, os.environ if env is None else env, fall_back)

    # --- probe and imports -----------------------------------------------------------------------

    def fail(self, error: RemoteError, doing: str) -> None:
        """The one line for this run: the registry is off from here on."""
        if self.failed is None:
            self.failed = error.message
            self.fall_back(f"registry {self.remote.name}: {error.message}; {doing}")

    def look(self, scopes: Iterable[str]) -> Probe:
        """Each scope's tag digest, within PROBE_DEADLINE_S in all (a hung registry is abandoned)."""
        wanted = list(dict.fromkeys(scopes))
        probe = Probe()
        done = threading.Event()

        def work() -> None:
            try:
                self._look_now(wanted, probe)
            except RemoteError as exc:
                probe.error = exc
            finally:
                done.set()

        threading.Thread(target=work, daemon=True).start()
        if not done.wait(PROBE_DEADLINE_S):
            probe = Probe(error=RemoteError("timeout", f"did not answer within {PROBE_DEADLINE_S:.0f} s"))
        self.probe = probe
        if probe.error is not None:
            self.fail(probe.error, "building from the local cache only")
        return probe

    def _look_now(self, wanted: list[str], probe: Probe) -> None:
        """/v2/, then every scope's tag at once (a thread each); fills `probe`."""
        client = self.client()
        client.ping()
        results: dict[str, str | RemoteError | None] = {}

        def one(scope: str) -> None:
            for attempt in range(2):  # a registry busy rewriting this tag (another host's push) may answer 5xx once
                try:
                    results[scope] = client.manifest_digest(scope_tag(scope, self.namespace))
                    return
                except RemoteError as exc:
                    results[scope] = exc
                    if exc.kind not in PROBE_RETRIED or attempt:
                        return
                time.sleep(PROBE_RETRY_DELAY_S)

        threads = [threading.Thread(target=one, args=(scope,), daemon=True) for scope in wanted]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for scope in wanted:
            value = results.get(scope)
            if isinstance(value, RemoteError):
                probe.error = probe.error or value
            else:
                probe.digests[scope] = value

    def client(self) -> RegistryClient:
        try:
            found = credentials.lookup(self.remote.registry, self.env)
        except credentials.CredentialsError as exc:
            raise RemoteError("auth", str(exc)) from None
        return RegistryClient(self.remote, found)

    def imports_for(self, scopes: Iterable[str], local: Mapping[str, str]) -> list[tuple[str, str]]:
        """(scope, cache_from) for each scope whose registry tag the local store lacks (`local`: scope -> digest)."""
        if self.failed is not None or self.probe is None:
            return []
        found = []
        for scope in scopes:
            digest = self.probe.digests.get(scope)
            if digest is not None and local.get(scope) != digest:
                found.append((scope, self.remote.cache_from(scope, self.namespace, digest)))
        return found

    # --- exports and the push ----------------------------------------------------------------------

    def observe(self, key: str, staging_path: Path | None, exported: bool) -> None:
        """On every tick of the build: note when BuildKit began and finished its local export."""
        if staging_path is None:
            return
        timer = self.timers.setdefault(key, ExportTimer())
        now = time.monotonic()
        if timer.began is None:
            try:
                if any(entry not in STAGING_ENTRIES_OF_OURS for entry in os.listdir(staging_path)):
                    timer.began = now
            except OSError:
                return
        if exported and timer.ended is None:
            timer.ended = now
            if timer.began is None:
                timer.began = now

    def wait_budget(self) -> float:
        """How long the build waits for its push: COMPOSECACHE_REMOTE_WAIT, else as long as its export took."""
        if self.settings.remote_wait_s is not None:
            return self.settings.remote_wait_s
        spans = [t.ended - t.began for t in self.timers.values() if t.began is not None and t.ended is not None]
        return max([MIN_WAIT_S, *spans])

    def push(self, published: Mapping[str, str]) -> None:
        """Push the scopes this build published (scope -> manifest digest) that the registry lacks."""
        if self.failed is not None or self.settings.read_only or self.settings.dry_run:
            return
        known = self.probe.digests if self.probe is not None else {}
        scopes = [scope for scope, digest in published.items() if known.get(scope) != digest]
        if not scopes:
            if published:
                self.output.debug(f"registry {self.remote.name} already holds what this build published")
            return
        job = PushJob(cache_dir=str(self.settings.cache_dir.absolute()), namespace=self.namespace,
                      remote=self.remote.name, insecure=self.remote.insecure, scopes=scopes)  # fmt: skip
        budget = self.wait_budget()
        try:
            running = BackgroundPush(job, self.env)
        except OSError as exc:
            self.fail(RemoteError("local", f"cannot start the push ({exc.strerror})"), "nothing pushed")
            return
        result = running.wait(budget)
        if result is None:
            self.output.info(f"registry {self.remote.name}: pushing {len(scopes)} scope(s) goes on in the "
                             f"background (pid {running.proc.pid}) after {budget:.1f} s")  # fmt: skip
            return
        self._report(result)

    def _report(self, result: PushResult) -> None:
        if result.errors:
            more = f" (+{len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
            self.fail(RemoteError(result.error_kind or "server", result.errors[0] + more), "not pushed")
            return
        new = f"{result.uploaded} new blob(s) ({result.uploaded_bytes / 1e6:.1f} MB), {result.present} present"
        self.output.info(
            f"registry {self.remote.name}: pushed {result.scopes} scope(s), {new}, in {result.seconds:.1f} s"
        )
