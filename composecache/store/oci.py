"""The few OCI structures a BuildKit local cache is made of.

A local cache export (measured, buildx 0.13.1 and 0.29.1):

    index.json   {"schemaVersion": 2, "manifests": [{"mediaType": "...image.index.v1+json",
                  "digest": "sha256:..", "size": 898,
                  "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    blobs/sha256/<hex>   the cache manifest: an OCI image index whose `manifests` are the
                         layer descriptors plus one `application/vnd.buildkit.cacheconfig.v0`
                         descriptor; with `image-manifest=true` an image manifest with
                         `config` + `layers` instead.

The cache config refers to layers by position in that list, so the manifest
names every blob a cache import can need.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any, NamedTuple

DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
HEX_RE = re.compile(r"^[0-9a-f]{64}$")
REF_NAME = "org.opencontainers.image.ref.name"
LATEST = "latest"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
MAX_DESCRIPTORS = 100_000


class OciError(ValueError):
    """An index or manifest that does not parse as one BuildKit writes."""


class Descriptor(NamedTuple):
    digest: str
    size: int
    media_type: str

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


def parse_descriptor(obj: Any) -> Descriptor:
    if not isinstance(obj, dict):
        raise OciError("a descriptor is not an object")
    digest, size, media_type = obj.get("digest"), obj.get("size"), obj.get("mediaType", "")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise OciError(f"unsupported digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise OciError(f"bad size {size!r} for {digest}")
    if not isinstance(media_type, str):
        raise OciError(f"bad mediaType for {digest}")
    return Descriptor(digest, size, media_type)


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    """The JSON object in `data`; callers only read it (it is shared: see _parse_json)."""
    try:
        value = _parse_json(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OciError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise OciError(f"{what} is not a JSON object")
    return value


@functools.lru_cache(maxsize=64)
def _parse_json(data: bytes) -> Any:
    # A build reads each cache manifest several times (import, seeding, the pool): ~1 ms of
    # json.loads each for a mode=max manifest, on every build's critical path.
    return json.loads(data)


def _descriptor_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise OciError(f"{what} has no list of descriptors")
    if len(value) > MAX_DESCRIPTORS:
        raise OciError(f"{what} lists more than {MAX_DESCRIPTORS} descriptors")
    return value


def select_cache_manifest(index_json: bytes) -> Descriptor:
    """The manifest an index.json points at: the entry tagged `latest`, else the last one.

    BuildKit writes one entry tagged `latest` per export; an export into a
    directory that already had one moves the tag to the new entry.
    """
    index = _load_object(index_json, "index.json")
    entries = _descriptor_list(index.get("manifests"), "index.json")
    if not entries:
        raise OciError("index.json lists no manifest")
    tagged = [
        entry
        for entry in entries
        if isinstance(entry, dict)
        and isinstance(entry.get("annotations"), dict)
        and entry["annotations"].get(REF_NAME) == LATEST
    ]
    return parse_descriptor(tagged[-1] if tagged else entries[-1])


def manifest_references(manifest: bytes) -> list[Descriptor]:
    """Every blob a cache manifest refers to (layers and the cache config), in order."""
    obj = _load_object(manifest, "the cache manifest")
    if "manifests" in obj:
        found = [parse_descriptor(d) for d in _descriptor_list(obj["manifests"], "the cache manifest")]
    elif "layers" in obj or "config" in obj:
        found = [parse_descriptor(d) for d in _descriptor_list(obj.get("layers", []), "the cache manifest")]
        if "config" in obj:
            found.append(parse_descriptor(obj["config"]))
    else:
        raise OciError("the cache manifest has neither `manifests` nor `layers`")
    unique: dict[str, Descriptor] = {}
    for descriptor in found:
        unique.setdefault(descriptor.digest, descriptor)
    return list(unique.values())


def scope_index_json(manifest: Descriptor) -> bytes:
    """A scope's index.json: one entry, tagged `latest`, pointing at `manifest`."""
    entry = {
        "mediaType": manifest.media_type or OCI_INDEX,
        "digest": manifest.digest,
        "size": manifest.size,
        "annotations": {REF_NAME: LATEST},
    }
    return json.dumps({"schemaVersion": 2, "manifests": [entry]}, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
