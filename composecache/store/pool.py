"""The pool: each layer's unpacked tree, once per namespace, keyed by chainID, next to the blobs.

    <ns>/pool/                              0700, owned by the user composecache runs as (root)
        entries/<chainID hex>/entry.json    what the tree is: chain, diffID, parent, blob, counts
        entries/<chainID hex>/tree/         the layer as an overlayfs lower directory
        staging/<chainID hex>.<random>/     a fill in progress (its entry lock is held meanwhile)
        locks/<chainID hex>.lock            flock of the one process filling an entry
        uses/<session>.json                 what one session daemon registered (refreshed each time)
        quarantine/<hex>.<random>/          entries found wrong, moved aside (still mounted maybe)
        trash/<hex>.<random>/               entries gc removes (renamed first, then deleted)

A session daemon's containerd gets a committed snapshot `sha256:<chainID>`
whose `fs` directory is a symlink to `entries/<hex>/tree`: BuildKit finds the
snapshot and does not extract the layer.  Overlayfs never writes a lower
directory, so containers cannot change a tree.

Filling (composecache.store.unpack): only from a blob of this namespace,
hashed while it is unpacked (the blob digest, then the diffID); the tree is
built in staging and renamed into place with entry.json inside it, so an
entry either exists whole or not at all.  Trees hold root-owned files,
device nodes and set-id bits: the pool is private to its owner (0700), and
an entry is used only when it is a real directory owned by that user and
writable by no one else, so a group writer of the store cannot plant one.

Lifecycle (docs/pool.md): an entry lives while its blob does, and while any
session registered it within the pool grace (POOL_GRACE_S), and while a
mounted overlay on this host uses it as a lower directory; the same use
records keep the blobs a session linked into its daemon.  `gc --grace 0`
applies to blobs no session uses, never to trees a session may have mounted.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from composecache.store import oci
from composecache.store.layout import Layout
from composecache.store.locking import LockTimeout, acquire
from composecache.store.safefs import UnsafePath, atomic_write_bytes, read_small_file, remove_tree

POOL_ENV = "COMPOSECACHE_POOL"
UNCOMPRESSED = "containerd.io/uncompressed"
CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
POOL_GRACE_S = 7 * 24 * 3600.0  # longer than a session lives: sessions refresh their record at each build
ENTRY_FORMAT = "composecache-pool-entry"
ENTRY_VERSION = 1
POOL_DIR_MODE = 0o700
ENTRY_JSON = "entry.json"
TREE = "tree"
FILL_LOCK_TIMEOUT_S = 900.0


def enabled(env: Mapping[str, str]) -> bool:
    return (env.get(POOL_ENV) or "1").strip().lower() not in {"0", "false", "no", "off"}


class PoolProblem(Exception):
    """An entry that must not be used; `kind` is missing, unsafe or corrupt."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


MISSING, UNSAFE, CORRUPT = "missing", "unsafe", "corrupt"


def chain_id(parent: str | None, diff_id: str) -> str:
    """The OCI chainID: the diffID for a base layer, else sha256("<parent chainID> <diffID>")."""
    if not oci.DIGEST_RE.match(diff_id) or (parent is not None and not oci.DIGEST_RE.match(parent)):
        raise ValueError(f"not a sha256 digest: {parent!r} / {diff_id!r}")
    if parent is None:
        return diff_id
    return oci.sha256_digest(f"{parent} {diff_id}".encode())


class PoolLayer(NamedTuple):
    """One layer of a chain, as the imported cache describes it."""

    chain_id: str
    diff_id: str
    parent: str | None  # the parent's chainID
    blob: oci.Descriptor

    @property
    def hex(self) -> str:
        return self.chain_id.split(":", 1)[1]


def chains_from_cache_config(  # noqa: C901  (one walk of the config's parent links, every way it can be bad)
    manifest_refs: Sequence[oci.Descriptor], annotations: Mapping[str, str], config: bytes
) -> list[PoolLayer]:
    """Every layer chain a BuildKit cache config names (parents before children), each once.

    `annotations`: blob digest -> its `containerd.io/uncompressed` diffID (from the cache manifest).
    Layers without a known diffID, and their children, are left out.
    """
    try:
        obj = json.loads(config)
    except (ValueError, UnicodeDecodeError) as exc:
        raise oci.OciError(f"the cache config is not JSON: {exc}") from exc
    layers = obj.get("layers") if isinstance(obj, dict) else None
    if not isinstance(layers, list) or len(layers) > oci.MAX_DESCRIPTORS:
        raise oci.OciError("the cache config has no list of layers")
    by_digest = {d.digest: d for d in manifest_refs}
    resolved: dict[int, PoolLayer | None] = {}

    def resolve(index: int, depth: int = 0) -> PoolLayer | None:
        if index in resolved:
            return resolved[index]
        resolved[index] = None  # a cycle resolves to nothing
        if depth > 1000 or not 0 <= index < len(layers) or not isinstance(layers[index], dict):
            return None
        entry = layers[index]
        blob = by_digest.get(entry.get("blob")) if isinstance(entry.get("blob"), str) else None
        diff_id = annotations.get(blob.digest) if blob is not None else None
        parent_index = entry.get("parent", 0)  # BuildKit omits a parent of 0 (omitempty); -1: a base layer
        if blob is None or diff_id is None or not isinstance(parent_index, int) or isinstance(parent_index, bool):
            return None
        parent = None
        if parent_index >= 0:
            parent = resolve(parent_index, depth + 1)
            if parent is None:
                return None
        try:
            layer = PoolLayer(chain_id(parent.chain_id if parent else None, diff_id), diff_id,
                              parent.chain_id if parent else None, blob)  # fmt: skip
        except ValueError:
            return None
        resolved[index] = layer
        return layer

    found: dict[str, PoolLayer] = {}
    for index in range(len(layers)):
        layer = resolve(index)
        chain: list[PoolLayer] = []
        while layer is not None and layer.chain_id not in found:
            chain.append(layer)
            layer = next((x for x in resolved.values() if x is not None and x.chain_id == layer.parent), None)
        for item in reversed(chain):
            found[item.chain_id] = item
    return list(found.values())


def layers_of_manifests(layout: Layout, manifests: Sequence[str]) -> list[PoolLayer]:
    """Every layer chain of the imported cache manifests, parents first, each once."""
    found: dict[str, PoolLayer] = {}
    for digest in manifests:
        match = oci.DIGEST_RE.match(digest)
        if match is None:
            continue
        try:
            manifest = json.loads(read_small_file(layout.blob(match.group(1))))
            refs, annotations, config = _manifest_parts(manifest)
            if config is None:
                continue
            config_bytes = read_small_file(layout.blob(config.hex))
            if oci.sha256_digest(config_bytes) != config.digest:
                continue  # the import reports it; a wrong config names wrong chains
            layers = chains_from_cache_config(refs, annotations, config_bytes)
        except (OSError, ValueError):
            continue
        for layer in layers:
            found.setdefault(layer.chain_id, layer)
    return list(found.values())


def _manifest_parts(manifest: Any) -> tuple[list[oci.Descriptor], dict[str, str], oci.Descriptor | None]:
    if not isinstance(manifest, dict):
        raise oci.OciError("the cache manifest is not an object")
    raw: Any = manifest.get("manifests") if "manifests" in manifest else manifest.get("layers", [])
    if not isinstance(raw, list):
        raise oci.OciError("the cache manifest has no descriptors")
    refs: list[oci.Descriptor] = []
    annotations: dict[str, str] = {}
    config = None
    for item in [*raw, *([manifest["config"]] if isinstance(manifest.get("config"), dict) else [])]:
        descriptor = oci.parse_descriptor(item)
        if descriptor.media_type == CACHE_CONFIG:
            config = descriptor
            continue
        refs.append(descriptor)
        notes = item.get("annotations") if isinstance(item, dict) else None
        diff_id = notes.get(UNCOMPRESSED) if isinstance(notes, dict) else None
        if isinstance(diff_id, str) and oci.DIGEST_RE.match(diff_id):
            annotations[descriptor.digest] = diff_id
    return refs, annotations, config


# --- where things are ----------------------------------------------------------------------------


class PoolLayout(NamedTuple):
    layout: Layout

    @property
    def root(self) -> Path:
        return self.layout.root / "pool"

    @property
    def entries(self) -> Path:
        return self.root / "entries"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def uses(self) -> Path:
        return self.root / "uses"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def trash(self) -> Path:
        return self.root / "trash"

    def entry(self, hex_digest: str) -> Path:
        if not oci.HEX_RE.match(hex_digest):
            raise PoolProblem(UNSAFE, f"not a chainID: {hex_digest[:80]!r}")
        return self.entries / hex_digest

    def tree(self, hex_digest: str) -> Path:
        return self.entry(hex_digest) / TREE

    def directories(self) -> list[Path]:
        return [self.root, self.entries, self.staging, self.locks, self.uses, self.quarantine, self.trash]


def _check_private_dir(path: Path) -> os.stat_result:
    """A real directory owned by us that no one else may write (else UnsafePath)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(errno.ELOOP, "is a symlink, refusing to follow it", str(path))
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(errno.ENOTDIR, "is not a directory", str(path))
    if info.st_uid != os.geteuid():
        raise UnsafePath(errno.EPERM, f"is owned by uid {info.st_uid}, not by uid {os.geteuid()}", str(path))
    if info.st_mode & 0o022:
        raise UnsafePath(errno.EPERM, "is writable by others", str(path))
    return info


def check_pool_dirs(pool: PoolLayout) -> None:
    """Raise OSError (UnsafePath, FileNotFoundError) unless the pool's directories are sound."""
    for directory in [pool.root, pool.entries]:
        _check_private_dir(directory)


def create_pool_dirs(pool: PoolLayout) -> None:
    for directory in pool.directories():
        try:
            os.mkdir(directory, POOL_DIR_MODE)
            os.chmod(directory, POOL_DIR_MODE)
        except FileExistsError:
            _check_private_dir(directory)


# --- entries -------------------------------------------------------------------------------------


class EntryInfo(NamedTuple):
    chain_id: str
    diff_id: str
    parent: str | None
    blob: str
    blob_size: int
    members: int
    bytes: int
    filled: float

    def to_json(self) -> dict[str, Any]:
        return {"format": ENTRY_FORMAT, "version": ENTRY_VERSION, "chain_id": self.chain_id, "diff_id": self.diff_id,
                "parent": self.parent, "blob": self.blob, "blob_size": self.blob_size, "members": self.members,
                "bytes": self.bytes, "filled": self.filled}  # fmt: skip


def _entry_from_json(raw: Any, hex_digest: str) -> EntryInfo:
    if not isinstance(raw, dict) or raw.get("format") != ENTRY_FORMAT or raw.get("version") != ENTRY_VERSION:
        raise PoolProblem(CORRUPT, "entry.json is not a pool entry")
    try:
        info = EntryInfo(str(raw["chain_id"]), str(raw["diff_id"]), raw["parent"], str(raw["blob"]),
                         int(raw["blob_size"]), int(raw["members"]), int(raw["bytes"]),
                         float(raw["filled"]))  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise PoolProblem(CORRUPT, f"entry.json lacks {exc}") from exc
    if info.parent is not None and not isinstance(info.parent, str):
        raise PoolProblem(CORRUPT, "entry.json has a bad parent")
    if not oci.DIGEST_RE.match(info.blob):
        raise PoolProblem(CORRUPT, "entry.json has a bad blob digest")
    try:
        computed = chain_id(info.parent, info.diff_id)
    except ValueError as exc:
        raise PoolProblem(CORRUPT, str(exc)) from exc
    if computed != info.chain_id or info.chain_id != f"sha256:{hex_digest}":
        raise PoolProblem(CORRUPT, "entry.json does not describe this chainID")
    return info


def read_entry(pool: PoolLayout, hex_digest: str) -> EntryInfo:
    """The entry's description after the checks a registration relies on; PoolProblem otherwise."""
    path = pool.entry(hex_digest)
    try:
        _check_private_dir(path)
    except FileNotFoundError as exc:
        raise PoolProblem(MISSING, "no such entry") from exc
    except OSError as exc:
        raise PoolProblem(UNSAFE, f"the entry {exc.strerror}") from exc
    try:
        raw = json.loads(read_small_file(path / ENTRY_JSON, limit=64 * 1024))
    except FileNotFoundError as exc:
        raise PoolProblem(CORRUPT, "entry.json is missing (a partial entry)") from exc
    except (OSError, ValueError) as exc:
        raise PoolProblem(CORRUPT, f"entry.json is unreadable ({exc})") from exc
    info = _entry_from_json(raw, hex_digest)
    try:
        tree = os.lstat(path / TREE)
    except FileNotFoundError as exc:
        raise PoolProblem(CORRUPT, "the tree is missing (a partial entry)") from exc
    if not stat.S_ISDIR(tree.st_mode):
        raise PoolProblem(UNSAFE, "the tree is not a directory (a planted symlink?)")
    if tree.st_uid != os.geteuid() or tree.st_mode & 0o022:
        raise PoolProblem(UNSAFE, "the tree is not owned by composecache's user or is writable by others")
    return info


def check_entry(pool: PoolLayout, layer: PoolLayer) -> EntryInfo:
    """read_entry plus: it is the layer the cache describes (diffID, parent, blob)."""
    info = read_entry(pool, layer.hex)
    if info.diff_id != layer.diff_id or info.parent != layer.parent:
        raise PoolProblem(CORRUPT, "entry.json describes another layer")
    return info


def quarantine_entry(pool: PoolLayout, hex_digest: str, reason: str) -> Path | None:
    """Move an entry aside (a mounted overlay keeps working: a rename keeps its directories)."""
    source = pool.entry(hex_digest)
    if not os.path.lexists(source):
        return None
    create_pool_dirs(pool)
    target = pool.quarantine / f"{hex_digest}.{os.urandom(4).hex()}"
    os.rename(source, target)  # a symlink planted at `source` moves as a symlink: never followed
    with contextlib.suppress(OSError):
        atomic_write_bytes(pool.quarantine / f"{target.name}.reason", reason.encode()[:4096] + b"\n")
    return target


class FillRefused(Exception):
    """The entry was not filled; the message says why (the layer imports the normal way)."""


def fill_entry(layout: Layout, layer: PoolLayer, on_wait: Any = None) -> EntryInfo:
    """Unpack the layer's blob into a new entry (or find one another process filled meanwhile).

    The parent entry must exist (its tree gives the attributes of directories the tar implies).
    """
    pool = PoolLayout(layout)
    create_pool_dirs(pool)
    lock_path = pool.locks / f"{layer.hex}.lock"
    try:
        lock = acquire(lock_path, timeout=FILL_LOCK_TIMEOUT_S, on_wait=on_wait, what="pool entry lock")
    except LockTimeout as exc:
        raise FillRefused(f"another process has been filling {layer.chain_id} for too long") from exc
    try:
        with contextlib.suppress(PoolProblem):
            return check_entry(pool, layer)  # filled while we waited
        if os.path.lexists(pool.entry(layer.hex)):
            raise FillRefused(f"a bad entry is in the way of {layer.chain_id}")
        return _fill_locked(layout, pool, layer)
    finally:
        lock.release()


def _parent_trees(pool: PoolLayout, layer: PoolLayer) -> list[Path]:
    trees: list[Path] = []
    parent = layer.parent
    while parent is not None and len(trees) < 1000:
        hex_digest = parent.split(":", 1)[1]
        try:
            info = read_entry(pool, hex_digest)
        except PoolProblem as exc:
            raise FillRefused(f"the parent layer {parent} is not in the pool ({exc})") from exc
        trees.append(pool.tree(hex_digest))
        parent = info.parent
    return trees


def _fill_locked(layout: Layout, pool: PoolLayout, layer: PoolLayer) -> EntryInfo:
    from composecache.store.unpack import UnpackRefused, unpack_layer  # tarfile: only when filling

    parents = _parent_trees(pool, layer)
    blob = layout.blob(layer.blob.hex)
    try:
        if os.lstat(blob).st_size != layer.blob.size:
            raise FillRefused(f"the blob {layer.blob.digest} has the wrong size in the store")
    except FileNotFoundError as exc:
        raise FillRefused(f"the blob {layer.blob.digest} is not in the store") from exc
    staging = pool.staging / f"{layer.hex}.{os.urandom(4).hex()}"
    os.mkdir(staging, POOL_DIR_MODE)
    try:
        tree = staging / TREE
        os.mkdir(tree, 0o755)
        try:
            result = unpack_layer(blob, tree, parents=parents)
        except UnpackRefused as exc:
            raise FillRefused(f"{layer.blob.digest}: {exc}") from exc
        if result.blob_digest != layer.blob.digest:
            raise FillRefused(f"the blob {layer.blob.digest} hashes to {result.blob_digest} (corrupt in the store)")
        if result.diff_id != layer.diff_id:
            raise FillRefused(f"the layer {layer.blob.digest} unpacks to {result.diff_id}, not to its diffID")
        info = EntryInfo(layer.chain_id, layer.diff_id, layer.parent, layer.blob.digest, layer.blob.size,
                         result.members, result.bytes, time.time())  # fmt: skip
        atomic_write_bytes(staging / ENTRY_JSON, json.dumps(info.to_json(), sort_keys=True).encode())
        os.chmod(tree, 0o755)
        try:
            os.rename(staging, pool.entry(layer.hex))
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            return check_entry(pool, layer)  # someone else won (the lock holder died meanwhile)
        return info
    finally:
        with contextlib.suppress(OSError):
            remove_tree(staging)


# --- what sessions use ----------------------------------------------------------------------------


def session_id(address: str) -> str:
    """A name for one session daemon: this host's boot, its node name, its containerd socket."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return hashlib.sha256(f"{os.uname().nodename}\0{boot}\0{address}".encode()).hexdigest()[:24]


def recorded_use(pool: PoolLayout, session: str) -> tuple[set[str], set[str]]:
    """The session's use record: (the chainIDs it used, the blobs it linked); empty when it has none."""
    entries: set[str] = set()
    linked: set[str] = set()
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        old = json.loads(read_small_file(pool.uses / f"{session}.json", limit=8 << 20))
        entries |= {e for e in old.get("entries", []) if isinstance(e, str) and oci.DIGEST_RE.match(e)}
        linked |= {b for b in old.get("blobs", []) if isinstance(b, str) and oci.DIGEST_RE.match(b)}
    return entries, linked


def record_use(pool: PoolLayout, session: str, chain_ids: Iterable[str], blobs: Iterable[str]) -> None:
    """Add to (and refresh) the session's use record: gc keeps those trees and blobs for POOL_GRACE_S."""
    path = pool.uses / f"{session}.json"
    entries, linked = recorded_use(pool, session)
    entries |= set(chain_ids)
    linked |= set(blobs)
    body = {"entries": sorted(entries), "blobs": sorted(linked), "updated": time.time()}
    atomic_write_bytes(path, json.dumps(body).encode(), mode=0o600, durable=False)
