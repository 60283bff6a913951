"""A stand-in for BuildKit's local cache exporter: writes what it writes, where it writes it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from composecache.store import Staging, Store
from composecache.store.oci import Descriptor

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CACHECONFIG = "application/vnd.buildkit.cacheconfig.v0"
INDEX = "application/vnd.oci.image.index.v1+json"


def write_blob(directory: Path, data: bytes, media_type: str = LAYER) -> Descriptor:
    """Write a blob like containerd's local store: ingest, then rename into blobs/sha256 (0444)."""
    digest = hashlib.sha256(data).hexdigest()
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    target = blobs / digest
    if not target.exists():  # BuildKit skips blobs that exist
        ingest = directory / "ingest"
        ingest.mkdir(exist_ok=True)
        tmp = ingest / f"{digest}.data"
        tmp.write_bytes(data)
        os.chmod(tmp, 0o444)
        os.rename(tmp, target)
    return Descriptor(f"sha256:{digest}", len(data), media_type)


def descriptor_json(d: Descriptor) -> dict[str, object]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


def fake_export(staging: Staging | Path, layers: list[bytes], *, image_manifest: bool = False) -> Descriptor:
    """Export `layers` plus a cache config into a staging dir; returns the manifest descriptor."""
    directory = staging.path if isinstance(staging, Staging) else staging
    layer_descs = [write_blob(directory, data) for data in layers]
    config = write_blob(directory, json.dumps({"layers": [d.digest for d in layer_descs]}).encode(), CACHECONFIG)
    if image_manifest:
        manifest_obj: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor_json(config),
            "layers": [descriptor_json(d) for d in layer_descs],
        }
        media_type = "application/vnd.oci.image.manifest.v1+json"
    else:
        manifest_obj = {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [*(descriptor_json(d) for d in layer_descs), descriptor_json(config)],
        }
        media_type = INDEX
    manifest = write_blob(directory, json.dumps(manifest_obj).encode(), media_type)
    index = {
        "schemaVersion": 2,
        "manifests": [{**descriptor_json(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return manifest


def publish_layers(store: Store, scope: str, layers: list[bytes]) -> Descriptor:
    staging = store.prepare_export(scope)
    manifest = fake_export(staging, layers)
    outcome = store.publish(staging)
    assert outcome.published, outcome
    return manifest


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, float]]:
    """Every entry under root with its mode, size and mtime (to prove nothing was written)."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        found[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime)
    info = root.lstat()
    found["."] = (info.st_mode, info.st_size, info.st_mtime)
    return found


HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o664)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""
