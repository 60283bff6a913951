"""Register the pool's unpacked layers in the session daemon before a build, so nothing is extracted.

BuildKit skips extracting a layer when its containerd already has the
committed snapshot `sha256:<chainID>`.  For every layer chain of the cache
manifests the build imports (the cache config gives each layer's parent, the
manifest its diffID), before the build runs:

1. pin: one small root object in the daemon's content store, labelled
   `containerd.io/gc.root`, whose labels reference every blob
   (`containerd.io/gc.ref.content.*`) and every chainID snapshot
   (`containerd.io/gc.ref.snapshot.<snapshotter>/*`) of the import: a label
   may name what does not exist yet, so nothing registered is ever
   unprotected from containerd's garbage collector;
2. fill the pool entry when it is missing (composecache.store.pool: from the
   store's blob, both digests checked) -- never for a read-only store;
3. register the snapshot: `ctr snapshots prepare --mounts <tmp> <parent>`,
   replace the new snapshot's empty `fs` directory by a symlink to the
   entry's tree, `ctr snapshots commit sha256:<chainID> <tmp>`;
4. link the layer's blob into the daemon's content directory as a symlink to
   the store's blob and register it with `ctr content ingest
   --expected-digest --expected-size` (containerd finds it in place and does
   not read it): no copy, no re-hash per session.  The blob was hashed when
   its entry was filled (once, ever); `verify --deep` re-hashes the store;
5. refresh this session's use record in the pool (gc keeps what it names).

After the build `release()` deletes the root: the images reference what they
use (the image config's `containerd.io/gc.ref.snapshot.*` label, the
manifest's layers); the daemon collects the rest, and removing a snapshot
removes its symlink, never the tree (containerd removes a snapshot directory
without following symlinks).  Anything wrong is one line and the normal path
(seeding copies the blobs the pool did not link, BuildKit extracts).
COMPOSECACHE_POOL=0 turns the pool off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from composecache import runner
from composecache.errors import ComposecacheError
from composecache.output import Output
from composecache.session import memo, seeding
from composecache.session.seeding import DaemonStore, Seeder
from composecache.store import oci
from composecache.store import pool as store_pool
from composecache.store.layout import Layout
from composecache.store.pool import UNCOMPRESSED, PoolLayer, PoolLayout, PoolProblem, layers_of_manifests

__all__ = [
    "UNCOMPRESSED",
    "Prepared",
    "Registrar",
    "SnapshotListing",
    "layers_of_manifests",
    "prepare_daemon",
    "start_listing",
]

TEMP_KEY_PREFIX = "composecache-pool-"
SNAPSHOT_DIR_RE = re.compile(r"/io\.containerd\.snapshotter\.v1\.overlayfs/snapshots/\d+/fs$")
CTR_TIMEOUT_S = 60.0
CTR_WORKERS = 4
REGISTERED_KIND = "pool_registered"  # the session memo's record of what this session registered
REF_LABEL_CONTENT = "containerd.io/gc.ref.content.composecache.pool."


class PoolUnavailable(Exception):
    """The pool cannot be used for this build; the message says why."""


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class PoolReport:
    """What one build's pool step did (filled in as it goes)."""

    layers: int = 0
    present: int = 0  # the daemon had the snapshot already
    registered: int = 0
    filled: int = 0
    filled_bytes: int = 0
    fill_seconds: float = 0.0
    linked: int = 0
    unfilled: int = 0  # missing from a pool this build may not fill (a read-only store)
    dropped: int = 0  # registered by an earlier build of this session, collected by the daemon since
    seconds: float = 0.0

    def __init__(self) -> None:
        self.problems: list[str] = []  # layers that extract the normal way, and why
        self.repaired: list[str] = []

    def summary(self) -> str:
        filled = ""
        if self.filled:
            filled = f", filled {self.filled} ({self.filled_bytes / 1e6:.0f} MB) in {self.fill_seconds:.1f}s"
        unfilled = f", {self.unfilled} not in the read-only pool" if self.unfilled else ""
        dropped = f", {self.dropped} the daemon dropped after an earlier build" if self.dropped else ""
        return (f"pool: {self.registered} of {self.layers} layers registered ({self.present} already there"
                f"{filled}{unfilled}{dropped}), {self.linked} blobs linked, in {self.seconds:.2f}s")  # fmt: skip


def _ctr_capture(daemon: DaemonStore, env: Mapping[str, str], *args: str, stdin_text: str | None = None,
                 stdin_path: Path | None = None) -> runner.Captured:  # fmt: skip
    try:
        return runner.capture(daemon.ctr_argv(*args), env, timeout=CTR_TIMEOUT_S, stdin_text=stdin_text,
                              stdin_path=stdin_path)  # fmt: skip
    except ComposecacheError as exc:
        return runner.Captured(127, "", str(exc))


def _snapshots_ls(daemon: DaemonStore) -> tuple[str, ...]:
    return ("snapshots", "--snapshotter", daemon.snapshotter, "ls")


def _digests(value: object) -> set[str]:
    return {item for item in value if isinstance(item, str)} if isinstance(value, list) else set()


class SnapshotListing:
    """`ctr snapshots ls`, started as soon as the session facts name the daemon.

    Every pooled build needs the daemon's snapshot names first: a Go program's start and a
    gRPC call, 20-40 ms on 2 cores (measured).  The compose front-end starts it in a thread
    beside its own work (reading the project, reserving the store), so it costs the build
    little; the Registrar of the same daemon uses it once.
    """

    def __init__(self, daemon: DaemonStore, env: Mapping[str, str]) -> None:
        self.daemon = daemon
        self._job = runner.Background(_ctr_capture, daemon, dict(env), *_snapshots_ls(daemon))

    def result(self) -> runner.Captured:
        return self._job.result()


def start_listing(daemon: DaemonStore | str | None, env: Mapping[str, str]) -> SnapshotListing | None:
    """The early listing for a daemon the pool will use (None: it will not, or cannot)."""
    if not isinstance(daemon, DaemonStore) or daemon.snapshotter != "overlayfs" or not store_pool.enabled(env):
        return None
    return SnapshotListing(daemon, env)


class Registrar:
    """One registration into one daemon; `release()` after the build (never raises)."""

    def __init__(self, daemon: DaemonStore, layout: Layout, env: Mapping[str, str], *, fill: bool,
                 listing: SnapshotListing | None = None) -> None:  # fmt: skip
        self.daemon = daemon
        self.listing = listing if listing is not None and listing.daemon == daemon else None
        self.layout = layout
        self.pool = PoolLayout(layout)
        self.env = dict(env)
        self.fill = fill
        self.report = PoolReport()
        self.root: str | None = None
        self.committed: list[str] = []  # chainIDs this registration committed (ctr labels them gc.root)
        self._lock = threading.Lock()  # the report and `committed`: written by worker threads
        self._sound: set[str] = set()  # chainIDs whose entry was checked or filled by this registration
        self._failed: set[str] = set()  # ... and those whose entry could not be used (said once)
        self.on_wait: Any = None
        self._registered_before: set[str] = set()  # what earlier builds of this session registered (its memo)
        self._key: str | None = None  # this session's memo key for them (set by _dropped)
        self.unneeded_blobs: set[str] = set()  # the blobs of dropped layers only: seeding leaves them out

    def _ctr(self, *args: str, stdin_text: str | None = None, stdin_path: Path | None = None) -> runner.Captured:
        return _ctr_capture(self.daemon, self.env, *args, stdin_text=stdin_text, stdin_path=stdin_path)

    def _check_usable(self) -> None:
        if self.daemon.snapshotter != "overlayfs":
            raise PoolUnavailable(f"the daemon's snapshotter is {self.daemon.snapshotter or 'unknown'}, not overlayfs")
        if os.geteuid() != 0:
            raise PoolUnavailable("registering layers needs root (the daemon's snapshot directories are root's)")
        if self.daemon.content_blobs is None:
            raise PoolUnavailable("the daemon's content directory is not reachable from here")

    def register(self, manifests: Sequence[str]) -> PoolReport:
        started = time.monotonic()
        layers = layers_of_manifests(self.layout, manifests)
        self.report.layers = len(layers)
        if not layers:
            return self.report
        self._check_usable()
        existing = self._snapshot_keys()
        dropped = self._dropped(existing)
        if dropped:
            kept = [layer for layer in layers if layer.chain_id not in dropped]
            # Their blobs are not seeded either: copied in before every build, collected after it.
            self.unneeded_blobs = {layer.blob.digest for layer in layers} - {layer.blob.digest for layer in kept}
            layers = kept
            self.report.dropped = self.report.layers - len(layers)
        if all(layer.chain_id in existing for layer in layers):
            # Every chain is there already (an earlier build of this session): the images that
            # hold them keep them, so there is nothing to pin, register or link.  Only the use
            # record is refreshed (the gc rule); this is the path of every same-session rebuild.
            # Roots a killed composecache left wait for the next build that registers something.
            self.report.present = len(layers)
            self._record_use({layer.chain_id for layer in layers}, [])
            self.report.seconds = time.monotonic() - started
            return self.report
        cleanup = runner.Background(self._remove_stale_roots)
        self._pin(layers)
        cleanup.result()
        # Entries first, parents before children (a fill reads its parents' trees); then the
        # snapshots, one depth of the layer tree at a time (a child needs its parent committed),
        # and the blobs, all in a few threads: each step is a ctr call of tens of milliseconds.
        usable, depth, to_register = self._plan(layers, existing)
        from concurrent.futures import ThreadPoolExecutor

        registered: set[str] = set()
        with ThreadPoolExecutor(max_workers=CTR_WORKERS) as workers:
            links = [(layer, workers.submit(self._link_blob, layer.blob)) for layer in layers
                     if layer.chain_id in usable]  # fmt: skip
            for level in sorted({depth[layer.chain_id] for layer in to_register}):
                done = existing | registered
                batch = [layer for layer in to_register if depth[layer.chain_id] == level
                         and (layer.parent is None or layer.parent in done)]  # fmt: skip
                for layer, ok in zip(batch, workers.map(self._register_one, batch), strict=True):
                    if ok:
                        registered.add(layer.chain_id)
            blobs_linked = [layer.blob.digest for layer, linked in links if linked.result()]
        self.report.registered = len(registered)
        self._remember_registered(registered, {layer.chain_id for layer in layers} & existing)
        usable = (usable - {c.chain_id for c in to_register}) | registered
        self._record_use(usable, blobs_linked)
        self.report.seconds = time.monotonic() - started
        return self.report

    def _plan(self, layers: Sequence[PoolLayer],
              existing: set[str]) -> tuple[set[str], dict[str, int], list[PoolLayer]]:  # fmt: skip
        """(the chainIDs the daemon has or will have, each chain's depth, the layers to register)."""
        usable: set[str] = set()
        layers_by_chain = {layer.chain_id: layer for layer in layers}
        depth: dict[str, int] = {}
        to_register: list[PoolLayer] = []
        for layer in layers:
            if layer.parent is not None and layer.parent not in usable:
                continue  # its parent could not be registered: the reason is reported once
            depth[layer.chain_id] = depth.get(layer.parent or "", -1) + 1
            if layer.chain_id in existing:
                self.report.present += 1
                usable.add(layer.chain_id)
            elif self._entries_ready(layer, layers_by_chain):
                to_register.append(layer)
                usable.add(layer.chain_id)
        return usable, depth, to_register

    def _dropped(self, existing: set[str]) -> set[str]:
        """Chains an earlier build of this session registered that the daemon has collected since.

        Registered snapshots that no image uses (a builder stage's layers, which only the
        cache names) go with the daemon's gc after the build: BuildKit did not need them, and
        in the session that built them it never does (it has its own snapshots of what it
        built).  Registering them again before every build cost such a session tens of ctr
        calls per build, so they are not: should a later build need one, it extracts that
        layer the normal way.  What this session registered is in its own memo, keyed by the
        daemon's content directory (a new data-root is a new daemon).  When nothing it registered,
        nor any chain the daemon had then (its images'), is left, the session was pruned: then
        nothing counts as dropped.
        """
        key = self._key = self._memo_key()
        value = memo.Memo.from_env(self.env).get(REGISTERED_KIND, key) if key is not None else None
        remembered = value if isinstance(value, dict) else {}
        self._registered_before = _digests(remembered.get("registered"))
        had = _digests(remembered.get("had"))  # the chains the daemon had then (its images')
        if not (self._registered_before | had) & existing:
            # Nothing of it is left: the session was pruned (`docker system prune -a`), not a
            # builder stage collected. Everything is registered again, as in a new session.
            self._registered_before = set()
        return self._registered_before - existing

    def _memo_key(self) -> str | None:
        try:
            info = os.stat(self.daemon.content_blobs) if self.daemon.content_blobs is not None else None
        except OSError:
            return None
        if info is None:
            return None
        return memo.fingerprint(str(self.daemon.address), self.daemon.namespace, info.st_dev, info.st_ino)

    def _remember_registered(self, registered: set[str], had: set[str]) -> None:
        key = self._key
        if key is not None and registered - self._registered_before:
            value = {"registered": sorted(self._registered_before | registered), "had": sorted(had)}
            memo.Memo.from_env(self.env).put(REGISTERED_KIND, key, value)

    def _record_use(self, chains: set[str], blobs_linked: list[str]) -> None:
        """Tell gc that this session uses these trees (and the blobs it linked) now."""
        if self.fill:
            with contextlib.suppress(OSError):
                store_pool.record_use(self.pool, store_pool.session_id(str(self.daemon.address)),
                                      sorted(chains), blobs_linked)  # fmt: skip

    # --- the daemon side ---

    def _snapshot_keys(self) -> set[str]:
        if self.listing is not None:
            listed, self.listing = self.listing.result(), None
        else:
            listed = _ctr_capture(self.daemon, self.env, *_snapshots_ls(self.daemon))
        if listed.returncode != 0:
            raise PoolUnavailable(f"ctr snapshots ls failed: {_first_line(listed.stderr)}")
        keys = set()
        stale = []
        for line in listed.stdout.splitlines()[1:]:
            words = line.split()
            if not words:
                continue
            keys.add(words[0])
            if words[0].startswith(TEMP_KEY_PREFIX) and not _alive(_pid_of_key(words[0])):
                stale.append(words[0])  # a composecache killed mid-registration
        if stale:
            self._ctr("snapshots", "--snapshotter", self.daemon.snapshotter, "rm", *stale)
        return keys

    def _pin(self, layers: Sequence[PoolLayer]) -> None:
        expires = int(time.time()) + seeding.ROOT_TTL_S
        body = json.dumps({"composecache-pool": os.urandom(16).hex(), "pid": os.getpid(), "expires": expires,
                           "layers": [layer.chain_id for layer in layers]}, sort_keys=True).encode()  # fmt: skip
        digest = oci.sha256_digest(body)
        labels = [f"{seeding.ROOT_LABEL}={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
                  f"{seeding.OWNER_LABEL}={expires}"]  # fmt: skip
        snapshot_label = f"containerd.io/gc.ref.snapshot.{self.daemon.snapshotter}/composecache"
        for i, layer in enumerate(layers):
            labels.append(f"{REF_LABEL_CONTENT}{i}={layer.blob.digest}")
            labels.append(f"{snapshot_label}{i}={layer.chain_id}")
        for _ in range(2):  # the daemon's gc may take the new blob between ingest and label
            ingest = self._ctr("content", "ingest", "--expected-digest", digest, "--expected-size", str(len(body)),
                               f"composecache-pool-root-{digest[7:19]}", stdin_text=body.decode())  # fmt: skip
            if ingest.returncode != 0 and "already exists" not in ingest.stderr:
                raise PoolUnavailable(f"ctr content ingest failed: {_first_line(ingest.stderr)}")
            labelled = self._ctr("content", "label", digest, *labels)
            if labelled.returncode == 0:
                self.root = digest
                return
        raise PoolUnavailable(f"ctr content label failed: {_first_line(labelled.stderr)}")

    def _register_one(self, layer: PoolLayer) -> bool:
        key = f"{TEMP_KEY_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        snapshots = ("snapshots", "--snapshotter", self.daemon.snapshotter)
        parent = [layer.parent] if layer.parent is not None else []
        prepared = self._ctr(*snapshots, "prepare", "--mounts", key, *parent)
        if prepared.returncode != 0:
            self.report.problems.append(f"{layer.chain_id}: ctr snapshots prepare: {_first_line(prepared.stderr)}")
            return False
        fs_dir = _snapshot_fs_dir(prepared.stdout)
        try:
            if fs_dir is not None:
                os.rmdir(fs_dir)  # empty: a new snapshot
                os.symlink(os.path.abspath(self.pool.tree(layer.hex)), fs_dir)
        except OSError as exc:
            fs_dir = None
            self.report.problems.append(f"{layer.chain_id}: {exc.strerror or exc}")
        if fs_dir is None:
            self._ctr(*snapshots, "rm", key)
            if not self.report.problems:
                self.report.problems.append("the new snapshot is not an overlayfs directory composecache knows")
            return False
        committed = self._ctr(*snapshots, "commit", layer.chain_id, key)
        if committed.returncode != 0:
            self._ctr(*snapshots, "rm", key)
            if "already exists" in committed.stderr:  # a build of this session registered it meanwhile
                return True
            self.report.problems.append(f"{layer.chain_id}: ctr snapshots commit: {_first_line(committed.stderr)}")
            return False
        with self._lock:
            self.committed.append(layer.chain_id)
        return True

    def _link_blob(self, blob: oci.Descriptor) -> bool:
        assert self.daemon.content_blobs is not None
        target = self.daemon.content_blobs / blob.hex
        source = Path(os.path.abspath(self.layout.blob(blob.hex)))
        with contextlib.suppress(OSError):
            if os.stat(target).st_size == blob.size:  # the daemon has it (it extracted the layer itself)
                return False
        try:
            if os.lstat(source).st_size != blob.size:
                return False
            os.symlink(source, target)
        except FileExistsError:
            pass  # containerd (or another build) has it already
        except OSError:
            return False
        ingested = self._ctr("content", "ingest", "--expected-digest", blob.digest, "--expected-size", str(blob.size),
                             f"composecache-pool-{blob.hex[:12]}", stdin_path=source)  # fmt: skip
        if ingested.returncode != 0 and "already exists" not in ingested.stderr:
            return False
        with self._lock:
            self.report.linked += 1
        return True

    # --- the pool side ---

    def _entries_ready(self, layer: PoolLayer, layers_by_chain: Mapping[str, PoolLayer]) -> bool:
        """The layer's entry and its ancestors' are sound (a fill reads its parents' trees).

        An ancestor the daemon had already (BuildKit extracted it) may be missing from the pool:
        it is filled too, once.
        """
        ancestors: list[PoolLayer] = []
        parent = layers_by_chain.get(layer.parent or "")
        while parent is not None and len(ancestors) < 1000:
            ancestors.append(parent)
            parent = layers_by_chain.get(parent.parent or "")
        return all(self._entry_ready(item) for item in [*reversed(ancestors), layer])

    def _entry_ready(self, layer: PoolLayer) -> bool:
        """The layer's entry is sound (checked, or filled / repaired now)."""
        if layer.chain_id in self._sound or layer.chain_id in self._failed:
            return layer.chain_id in self._sound
        if self._entry_checked_or_filled(layer):
            self._sound.add(layer.chain_id)
            return True
        self._failed.add(layer.chain_id)
        return False

    def _entry_checked_or_filled(self, layer: PoolLayer) -> bool:
        try:
            store_pool.check_pool_dirs(self.pool)
            store_pool.check_entry(self.pool, layer)
            return True
        except FileNotFoundError:
            problem = PoolProblem(store_pool.MISSING, "no pool yet")
        except OSError as exc:
            self.report.problems.append(f"the pool directory is unsafe ({exc.filename}: {exc.strerror})")
            return False
        except PoolProblem as exc:
            problem = exc
        if not self.fill:
            if problem.kind != store_pool.MISSING:
                self.report.problems.append(f"pool entry {layer.chain_id} is {problem}")
            else:  # nothing wrong: a read-only consumer of a pool no writer has filled yet
                self.report.unfilled += 1
            return False
        if problem.kind != store_pool.MISSING:
            try:
                store_pool.quarantine_entry(self.pool, layer.hex, str(problem))
            except (OSError, PoolProblem) as exc:
                self.report.problems.append(f"pool entry {layer.chain_id} is {problem}; cannot move it aside ({exc})")
                return False
            self.report.repaired.append(f"pool entry {layer.chain_id} was {problem}")
        started = time.monotonic()
        try:
            info = store_pool.fill_entry(self.layout, layer, on_wait=self.on_wait)
        except (store_pool.FillRefused, OSError, PoolProblem) as exc:
            self.report.problems.append(f"could not fill the pool entry of {layer.chain_id}: {exc}")
            return False
        self.report.filled += 1
        self.report.filled_bytes += info.bytes
        self.report.fill_seconds += time.monotonic() - started
        return True

    def _remove_stale_roots(self) -> None:
        seeding.remove_stale_roots(self._ctr)

    def release(self) -> None:
        """Unpin: the images reference what they use; the daemon collects the rest.

        `ctr snapshots commit` labels each new snapshot `containerd.io/gc.root`; that label goes
        too, or no image removal or prune would ever free the snapshot (and its symlink).
        """
        snapshots = ("snapshots", "--snapshotter", self.daemon.snapshotter)
        if self.committed:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=CTR_WORKERS) as workers:
                list(workers.map(lambda chain: self._ctr(*snapshots, "label", chain, f"{seeding.ROOT_LABEL}="),
                                 self.committed))  # fmt: skip
        self.committed.clear()
        if self.root is not None:
            self._ctr("content", "rm", self.root)
            self.root = None


def _snapshot_fs_dir(mounts_json: str) -> Path | None:
    """The new snapshot's own `fs` directory from `ctr snapshots prepare --mounts` (bind or upperdir)."""
    try:
        mounts = json.loads(mounts_json)
    except ValueError:
        return None
    if not isinstance(mounts, list) or len(mounts) != 1 or not isinstance(mounts[0], dict):
        return None
    mount = mounts[0]
    options: list[Any] = mount["Options"] if isinstance(mount.get("Options"), list) else []
    if mount.get("Type") == "bind":
        path = mount.get("Source")
    elif mount.get("Type") == "overlay":
        path = next((o[len("upperdir=") :] for o in options if isinstance(o, str) and o.startswith("upperdir=")), None)
    else:
        return None
    if not isinstance(path, str) or not SNAPSHOT_DIR_RE.search(path):
        return None
    return Path(path)


def _pid_of_key(key: str) -> int:
    try:
        return int(key[len(TEMP_KEY_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


# --- the hook the front-ends call -------------------------------------------------------------------


class Prepared:
    """What was done to the daemon before the build; `release()` after it (never raises)."""

    registrar: Registrar | None = None
    seeder: Seeder | None = None

    def release(self) -> None:
        for part in (self.seeder, self.registrar):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.release()


def prepare_daemon(
    layout: Layout | None,
    manifests: Sequence[str],
    daemon: DaemonStore | str | None,
    env: Mapping[str, str],
    output: Output,
    *,
    fill: bool,
    fall_back: Callable[[str], None] | None = None,
    listing: SnapshotListing | None = None,
) -> Prepared | None:
    """Pool registration, then seeding for what the pool did not cover; None when neither ran.

    `fill`: the store is writable by this build (a read-only consumer never fills the pool).
    `fall_back`: how the one line is said (default Output.fall_back; the build lifecycle's own
    defers strict mode's failure until the build has run and cleaned up).
    Never raises for a pool problem: one line and the normal path.
    """
    prepared = Prepared()
    if layout is None or not manifests:
        pass
    elif isinstance(daemon, DaemonStore) and store_pool.enabled(env):
        prepared.registrar = _register(manifests, Registrar(daemon, layout, env, fill=fill, listing=listing),
                                       output, fall_back=fall_back or output.fall_back)  # fmt: skip
    elif isinstance(daemon, DaemonStore):
        output.debug(f"{store_pool.POOL_ENV}=0: not registering pooled layers")
    elif isinstance(daemon, str) and store_pool.enabled(env):
        # No usable session daemon (no ctr, a remote daemon, another snapshotter, a container
        # builder): an expected setup, so an info line (-q hides it), not a fall-back warning.
        output.info(f"layer pool not used: {daemon}; layers stream and extract the normal way")
    skip = prepared.registrar.unneeded_blobs if prepared.registrar is not None else set()
    prepared.seeder = seeding.seed_imports(layout, manifests, daemon, env, output, skip=skip)
    return prepared if prepared.registrar or prepared.seeder else None


def _register(manifests: Sequence[str], registrar: Registrar, output: Output, *,
              fall_back: Callable[[str], None]) -> Registrar | None:  # fmt: skip
    registrar.on_wait = output.info
    try:
        report = registrar.register(manifests)
    except PoolUnavailable as exc:
        registrar.release()
        fall_back(f"the layer pool is off for this build ({exc}); layers extract the normal way")
        return None
    except Exception as exc:  # an optimisation must never cost the build
        registrar.release()
        fall_back(f"the layer pool failed ({exc!r}); layers extract the normal way")
        return None
    try:
        for line in report.repaired:
            output.warn(f"{line}: moved it to the pool's quarantine and filled it again from its blob")
        if report.problems:
            more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            fall_back(f"pool: {report.problems[0]}{more}; those layers extract the normal way")
    except BaseException:  # strict mode raises: nothing stays pinned
        registrar.release()
        raise
    output.debug(report.summary())
    return registrar
