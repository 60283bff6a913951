"""Seeding: put the layer blobs a build will import straight into the session daemon's content store.

Why (docs/performance.md): a local cache import streams every layer BuildKit
needs through the client's build session (about 85 MB/s here), while a copy on
disk runs several times faster.  When the blobs are already in the daemon's
containerd content store, BuildKit finds them there and fetches nothing: only
extraction is left.

How, before the build runs:

1. locate the daemon's store: `docker info` gives DockerRootDir and (Docker >=
   28) the containerd address and namespace; older engines: the containerd that
   dockerd started has `--config <exec-root>/containerd/containerd.toml` whose
   `root` is `<DockerRootDir>/containerd/daemon` (found through /proc), or
   COMPOSECACHE_CONTAINERD_ADDRESS names the socket explicitly;
2. pin the blobs against containerd's garbage collector FIRST: a small "seed
   root" blob labelled `containerd.io/gc.root` with one
   `containerd.io/gc.ref.content.*` label per blob (a label may name content
   that does not exist yet, so no blob is ever unprotected once committed);
   `ctr` has no lease option, and a root object is what a lease would be;
3. copy each missing blob into `<root>/io.containerd.content.v1.content/blobs/
   sha256/<hex>` (temp file + link: never replaces what containerd wrote) and
   register it in the daemon's namespace with `ctr content ingest
   --expected-digest --expected-size` (containerd sees the blob exists and does
   not re-hash it; when the content directory is not reachable, ctr reads the
   blob from stdin and hashes it: slower, still correct);
4. after the build, delete the seed root: what the new images use stays
   referenced by them, the rest is the daemon's to collect.

A blob copied into the content directory is hashed on the way and linked
under its digest only when it matches: containerd takes a file at a digest's
name on trust, so a corrupt shared blob (a bad disk, a truncated copy) would
otherwise sit in the daemon and fail every later build of that layer in the
session, with the cache or without (tests/e2e/test_faults.py).  Every failure means
the normal import path: seeding is a pure optimisation.
COMPOSECACHE_SEED=0 turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from composecache import runner
from composecache.output import Output
from composecache.store import oci, scopes
from composecache.store.layout import Layout

SEED_ENV = "COMPOSECACHE_SEED"
ADDRESS_ENV = "COMPOSECACHE_CONTAINERD_ADDRESS"
NAMESPACE_ENV = "COMPOSECACHE_CONTAINERD_NAMESPACE"
DEFAULT_NAMESPACE = "moby"
# Blobs smaller than this stream through the build session faster than a ctr call costs.
MIN_SEED_BYTES = 1 << 20
CONTENT_DIR = "io.containerd.content.v1.content"
ROOT_LABEL = "containerd.io/gc.root"
REF_LABEL_PREFIX = "containerd.io/gc.ref.content.composecache."
OWNER_LABEL = "composecache.seed.expires"
# A root left behind by a composecache that was killed is removed by a later seed after this.
ROOT_TTL_S = 24 * 3600
SEED_MEDIA_TYPES = ("layer", "tar")  # layer blobs (docker and OCI media types); never the cache config
COPY_WORKERS = 2
CTR_TIMEOUT_S = 120.0


class SeedUnavailable(Exception):
    """Seeding cannot be used here; the message says why (shown with -v)."""


class DaemonStore(NamedTuple):
    """Where a session daemon keeps its containerd content, as far as composecache can reach it."""

    address: Path  # containerd's gRPC socket
    namespace: str
    ctr: Path
    content_blobs: Path | None  # <content root>/blobs/sha256 when writable from here, else None
    snapshotter: str = ""  # docker info's Driver with the containerd image store ("overlayfs")

    def ctr_argv(self, *args: str) -> list[str]:
        return [str(self.ctr), "-a", str(self.address), "-n", self.namespace, *args]


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class SeedReport:
    """What one build's seeding did (filled in as it goes)."""

    candidates: int = 0
    present: int = 0
    seeded: int = 0
    seeded_bytes: int = 0
    seconds: float = 0.0
    root: str | None = None

    def __init__(self) -> None:
        self.problems: list[str] = []

    def summary(self) -> str:
        return (f"seeded {self.seeded} of {self.candidates} layer blobs ({self.seeded_bytes / 1e6:.0f} MB; "
                f"{self.present} already there) into the daemon's content store in {self.seconds:.1f}s")  # fmt: skip


def enabled(env: Mapping[str, str]) -> bool:
    return (env.get(SEED_ENV) or "auto").strip().lower() not in {"0", "false", "no", "off"}


# --- locating the daemon's store ------------------------------------------------------------------


def locate(info: Mapping[str, Any] | None, env: Mapping[str, str]) -> DaemonStore:
    """The daemon's containerd store from its `docker info`, or SeedUnavailable (remote, no ctr, ...)."""
    if not enabled(env):
        raise SeedUnavailable(f"{SEED_ENV} is off")
    host = env.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        raise SeedUnavailable(f"DOCKER_HOST {host} is not a local socket")
    import shutil  # only when the daemon is looked up (not on a memo hit): shutil costs ~4 ms to import

    ctr_name = env.get("COMPOSECACHE_CTR") or shutil.which("ctr", path=env.get("PATH"))
    if not ctr_name:
        raise SeedUnavailable("ctr (containerd's client) is not on PATH")
    if info is None:
        raise SeedUnavailable("docker info failed")
    return _store_from_info(info, env, Path(ctr_name))


def _store_from_info(info: Mapping[str, Any], env: Mapping[str, str], ctr: Path) -> DaemonStore:
    status = json.dumps(info.get("DriverStatus"))
    if "io.containerd.snapshotter" not in status:
        raise SeedUnavailable("the daemon does not use the containerd image store")
    root_dir = info.get("DockerRootDir")
    if not isinstance(root_dir, str) or not root_dir:
        raise SeedUnavailable("docker info gives no DockerRootDir")
    containerd = info.get("Containerd") if isinstance(info.get("Containerd"), dict) else {}
    assert isinstance(containerd, dict)
    namespaces = containerd.get("Namespaces") if isinstance(containerd.get("Namespaces"), dict) else {}
    assert isinstance(namespaces, dict)
    namespace = env.get(NAMESPACE_ENV) or str(namespaces.get("Containers") or DEFAULT_NAMESPACE)
    content_root = Path(root_dir) / "containerd" / "daemon"
    address_text = env.get(ADDRESS_ENV) or containerd.get("Address")
    if isinstance(address_text, str) and address_text:
        address = Path(address_text.removeprefix("unix://"))
    else:
        found = find_managed_containerd(content_root)
        if found is None:
            raise SeedUnavailable(f"no containerd serving {content_root} found (set {ADDRESS_ENV})")
        address, content_root = found
    try:
        if not stat.S_ISSOCK(os.stat(address).st_mode) or not os.access(address, os.R_OK | os.W_OK):
            raise SeedUnavailable(f"{address} is not a socket composecache may use")
    except OSError as exc:
        raise SeedUnavailable(f"cannot reach {address}: {exc.strerror}") from exc
    content = content_root / CONTENT_DIR
    blobs = content / "blobs" / "sha256"
    if (content_root / "io.containerd.metadata.v1.bolt").is_dir() and not blobs.exists():
        # A fresh daemon has no content directory yet: containerd makes it (0755) at its first commit.
        with contextlib.suppress(OSError):
            os.makedirs(blobs, mode=0o755, exist_ok=True)
    writable = blobs.is_dir() and os.access(blobs, os.W_OK | os.X_OK)
    return DaemonStore(address=address, namespace=namespace, ctr=ctr, content_blobs=blobs if writable else None,
                       snapshotter=str(info.get("Driver") or ""))  # fmt: skip


def find_managed_containerd(content_root: Path, proc: Path = Path("/proc")) -> tuple[Path, Path] | None:
    """(socket, root) of the containerd whose config's `root` is content_root (dockerd starts it so)."""
    import tomllib  # only here: most engines say where their containerd is

    wanted = os.path.realpath(content_root)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"containerd") or b"--config" not in argv:
            continue
        position = argv.index(b"--config") + 1
        if position >= len(argv):
            continue
        try:
            config = tomllib.loads(Path(os.fsdecode(argv[position])).read_text())
        except (OSError, ValueError):
            continue
        root = config.get("root")
        grpc = config.get("grpc")
        address = grpc.get("address") if isinstance(grpc, dict) else None
        if isinstance(root, str) and isinstance(address, str) and os.path.realpath(root) == wanted:
            return Path(address), Path(root)
    return None


# --- what to seed ---------------------------------------------------------------------------------


def blobs_to_seed(layout: Layout, manifest_digests: Iterable[str]) -> list[oci.Descriptor]:
    """The layer blobs of the imported cache manifests worth seeding (each once, biggest first)."""
    found: dict[str, oci.Descriptor] = {}
    for digest in manifest_digests:
        size = scopes.blob_size(layout, digest)
        if size is None:
            continue
        try:
            references = scopes.read_manifest(layout, oci.Descriptor(digest, size, ""))
        except scopes.ScopeProblem:
            continue  # the import itself will say what is wrong
        for descriptor in references:
            is_layer = any(word in descriptor.media_type for word in SEED_MEDIA_TYPES)
            if is_layer and descriptor.size >= MIN_SEED_BYTES:
                found.setdefault(descriptor.digest, descriptor)
    return sorted(found.values(), key=lambda d: d.size, reverse=True)


# --- seeding --------------------------------------------------------------------------------------


def remove_stale_roots(ctr: Callable[..., runner.Captured]) -> None:
    """Content roots a killed composecache left: seeding's and the pool's carry the same expiry label."""
    listed = ctr("content", "ls", f'labels."{OWNER_LABEL}"')
    now = time.time()
    for line in listed.stdout.splitlines()[1:]:
        digest = line.split(maxsplit=1)[0] if line.strip() else ""
        match = re.search(rf"{re.escape(OWNER_LABEL)}=(\d+)", line)
        if digest.startswith("sha256:") and match and int(match.group(1)) < now:
            ctr("content", "rm", digest)


class Seeder:
    """One seeding: pin, copy, register; `release()` after the build (never raises)."""

    def __init__(self, daemon: DaemonStore, layout: Layout, env: Mapping[str, str]) -> None:
        self.daemon = daemon
        self.layout = layout
        self.env = dict(env)
        self.report = SeedReport()

    def _ctr(self, *args: str, stdin_text: str | None = None, stdin_path: Path | None = None) -> runner.Captured:
        return runner.safe_capture(self.daemon.ctr_argv(*args), self.env, CTR_TIMEOUT_S,
                                   stdin_text=stdin_text, stdin_path=stdin_path)  # fmt: skip

    def _present(self, descriptor: oci.Descriptor) -> bool:
        if self.daemon.content_blobs is None:
            return False
        try:
            return (self.daemon.content_blobs / descriptor.hex).stat().st_size == descriptor.size
        except OSError:
            return False

    def seed(self, manifests: Sequence[str], skip: Collection[str] = ()) -> SeedReport:
        started = time.monotonic()
        candidates = [d for d in blobs_to_seed(self.layout, manifests) if d.digest not in skip]
        missing = [d for d in candidates if not self._present(d)]
        self.report.candidates, self.report.present = len(candidates), len(candidates) - len(missing)
        if missing:
            cleanup = runner.Background(self._remove_stale_roots)
            if self._pin(candidates):
                self._seed_all(missing)
            cleanup.result()
        self.report.seconds = time.monotonic() - started
        return self.report

    def _seed_all(self, missing: list[oci.Descriptor]) -> None:
        """COPY_WORKERS threads take blobs from one queue (biggest first); results under a lock."""
        queue = list(reversed(missing))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    descriptor = queue.pop()
                ok = self._seed_one(descriptor)
                with lock:
                    if ok:
                        self.report.seeded += 1
                        self.report.seeded_bytes += descriptor.size

        workers = [runner.Background(work) for _ in range(COPY_WORKERS)]
        for worker in workers:
            worker.result()

    def _pin(self, candidates: Sequence[oci.Descriptor]) -> bool:
        """Commit and label the seed root (twice at most: gc may take it between the two calls)."""
        expires = int(time.time()) + ROOT_TTL_S
        body = json.dumps({"composecache-seed": os.urandom(16).hex(), "pid": os.getpid(), "expires": expires,
                           "blobs": [d.digest for d in candidates]}, sort_keys=True)  # fmt: skip
        digest = oci.sha256_digest(body.encode())
        labels = [f"{ROOT_LABEL}={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", f"{OWNER_LABEL}={expires}"]
        labels += [f"{REF_LABEL_PREFIX}{i}={d.digest}" for i, d in enumerate(candidates)]
        for _ in range(2):
            ingest = self._ctr("content", "ingest", "--expected-digest", digest, "--expected-size",
                               str(len(body.encode())), f"composecache-seed-root-{digest[7:19]}",
                               stdin_text=body)  # fmt: skip
            if ingest.returncode != 0 and "already exists" not in ingest.stderr:
                self.report.problems.append(f"ctr content ingest failed: {_first_line(ingest.stderr)}")
                return False
            labelled = self._ctr("content", "label", digest, *labels)
            if labelled.returncode == 0:
                self.report.root = digest
                return True
        self.report.problems.append(f"ctr content label failed: {_first_line(labelled.stderr)}")
        return False

    def _seed_one(self, descriptor: oci.Descriptor) -> bool:
        source = self.layout.blob(descriptor.hex)
        try:
            if os.stat(source).st_size != descriptor.size:
                self.report.problems.append(f"{descriptor.digest}: wrong size in the shared store")
                return False
            if self.daemon.content_blobs is not None:
                self._copy_into_content_dir(source, descriptor)
        except OSError as exc:
            self.report.problems.append(f"{descriptor.digest}: {exc.strerror or exc}")
            return False
        result = self._ctr("content", "ingest", "--expected-digest", descriptor.digest, "--expected-size",
                           str(descriptor.size), f"composecache-seed-{descriptor.hex[:12]}",
                           stdin_path=source)  # fmt: skip
        if result.returncode != 0 and "already exists" not in result.stderr:
            self.report.problems.append(f"{descriptor.digest}: ctr content ingest: {_first_line(result.stderr)}")
            return False
        return True

    def _copy_into_content_dir(self, source: Path, descriptor: oci.Descriptor) -> None:
        assert self.daemon.content_blobs is not None
        target = self.daemon.content_blobs / descriptor.hex
        if target.exists():
            return
        temp = self.daemon.content_blobs / f".composecache-{descriptor.hex}.{os.urandom(4).hex()}"
        try:
            _copy_verified(source, temp, descriptor.digest)
            os.chmod(temp, 0o444)
            if os.stat(temp).st_size != descriptor.size:
                raise OSError(f"copied {temp.name}: size changed while copying")
            with contextlib.suppress(FileExistsError):  # containerd or another seeder got there first
                os.link(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _remove_stale_roots(self) -> None:
        remove_stale_roots(self._ctr)

    def release(self) -> None:
        """Unpin: the images that used the blobs keep them; the daemon collects the rest."""
        if self.report.root is not None:
            self._ctr("content", "rm", self.report.root)
            self.report.root = None


def _copy_verified(source: Path, temp: Path, digest: str, chunk: int = 1 << 20) -> None:
    """Copy `source` to `temp` (a new file), hashing on the way; OSError unless it matches `digest`."""
    hasher = hashlib.sha256()
    with open(source, "rb") as src, open(temp, "xb") as dst:
        while data := src.read(chunk):
            hasher.update(data)
            dst.write(data)
    if f"sha256:{hasher.hexdigest()}" != digest:
        raise OSError(f"the shared store's copy does not match its digest (sha256:{hasher.hexdigest()})")


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


# --- the hooks the front-ends call ----------------------------------------------------------------


def seed_imports(
    layout: Layout | None,
    manifests: Sequence[str],
    daemon: DaemonStore | str | None,
    env: Mapping[str, str],
    output: Output,
    *,
    skip: Collection[str] = (),
) -> Seeder | None:
    """Seed the layers of the imported manifests (digests); the Seeder to release after the build, or None.

    skip: blob digests to leave out (the pool's layers that this session's daemon dropped).

    daemon: where the daemon keeps its content, or why seeding cannot be used
    (a string, shown with -v), or None (seeding off).  Never raises: anything
    unexpected is one warning and the normal import path.
    """
    if daemon is None or layout is None or not manifests:
        return None
    if isinstance(daemon, str):
        output.debug(f"not seeding the daemon's content store: {daemon}")
        return None
    seeder = Seeder(daemon, layout, env)
    try:
        report = seeder.seed(manifests, skip)
    except Exception as exc:  # a bug: an optimisation must never cost the build (strict mode raises it)
        seeder.release()
        from composecache import crashlog  # the error path only

        crashlog.fail_open(exc, output, "seeding the daemon's content store failed; importing the normal way")
        return None
    if report.problems:
        output.warn(f"seeding: {report.problems[0]}" + (f" (+{len(report.problems) - 1} more)"
                    if len(report.problems) > 1 else "") + "; those layers import the normal way")  # fmt: skip
    output.debug(report.summary())
    return seeder
