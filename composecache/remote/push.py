"""A published local scope -> the registry: the blobs the registry lacks, then the manifest under its tag.

BuildKit's registry cache export pushes the same OCI index it writes to a local
cache (measured: one build exporting to both gave the same manifest digest), so
pushing the local scope's manifest and blobs gives exactly what a second
`cache_to type=registry` would, without making the build wait for the registry.

The push runs in a detached process (`python -m composecache.remote.push`, the
job as JSON on stdin, the result as JSON on stdout) holding a lease on the
manifest, so the local store's gc keeps its blobs until the push is done.  The
front-end waits for it only as long as the build's own export took (at least
MIN_WAIT_S); a push still running then goes on in the background.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from composecache.remote.client import (
    GARBAGE,
    SERVER,
    TIMEOUT,
    TRANSFER_TIMEOUT_S,
    UNREACHABLE,
    RegistryClient,
    RemoteError,
)
from composecache.remote.config import parse_remote
from composecache.remote.naming import scope_tag
from composecache.store import oci
from composecache.store.layout import Layout

MIN_WAIT_S = 2.0
PUSH_DEADLINE_S = 1800.0  # the detached push stops starting scopes after this (each request has its own timeouts)
# A registry busy with other hosts' pushes answers a request late or with a 5xx now and then; the
# detached push is off the build's path, so it tries a scope again (what is uploaded stays uploaded).
RETRY_DELAYS_S = (1.0, 3.0)
TRANSIENT = frozenset({TIMEOUT, SERVER, GARBAGE, UNREACHABLE})


@dataclass
class PushResult:
    scopes: int = 0
    uploaded: int = 0  # blobs
    uploaded_bytes: int = 0
    present: int = 0  # blobs the registry already had
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # one message per scope that failed (no credentials)
    error_kind: str = ""


def push_manifest(layout: Layout, client: RegistryClient, tag: str, digest: str, result: PushResult) -> None:
    """Push one cache manifest and every blob it names that the registry does not hold yet."""
    data = _read_blob(layout, digest.split(":", 1)[1])
    if oci.sha256_digest(data) != digest:
        raise RemoteError("local", f"the local manifest {digest} is corrupt: not pushed")
    for descriptor in oci.manifest_references(data):
        if client.blob_exists(descriptor.digest):
            result.present += 1
            continue
        path = layout.blob(descriptor.hex)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size != descriptor.size:
                raise RemoteError("local", f"local blob {descriptor.digest} has the wrong size: not pushed")
            client.upload_blob(descriptor.digest, stream, size)
        result.uploaded += 1
        result.uploaded_bytes += size
    client.put_manifest(tag, data, _media_type(data))
    result.scopes += 1


def push_with_retries(layout: Layout, client: RegistryClient, tag: str, digest: str, result: PushResult,
                      sleep: Callable[[float], None] = time.sleep) -> None:  # fmt: skip
    """push_manifest, again after a transient failure (RETRY_DELAYS_S); the last error is raised."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            push_manifest(layout, client, tag, digest, result)
            return
        except RemoteError as exc:
            if exc.kind not in TRANSIENT or delay is None:
                raise
        sleep(delay)


def _media_type(manifest: bytes) -> str:
    """The manifest's own mediaType; BuildKit's cache is an OCI index (an image manifest with image-manifest=true)."""
    obj = json.loads(manifest)
    declared = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(declared, str) and declared:
        return declared
    return (
        oci.OCI_INDEX if isinstance(obj, dict) and "manifests" in obj else "application/vnd.oci.image.manifest.v1+json"
    )


def _read_blob(layout: Layout, hex_digest: str) -> bytes:
    from composecache.store.safefs import read_small_file

    return read_small_file(layout.blob(hex_digest))


@dataclass(frozen=True)
class PushJob:
    cache_dir: str
    namespace: str
    remote: str
    insecure: bool
    scopes: list[str]


def run_job(job: PushJob, env: Mapping[str, str]) -> PushResult:
    """What the detached process does: lease each scope's current manifest, push it, release."""
    from composecache.remote import credentials
    from composecache.store import Store

    started = time.monotonic()
    result = PushResult()
    remote = parse_remote(job.remote, insecure=job.insecure)
    try:
        client = RegistryClient(remote, credentials.lookup(remote.registry, env), timeout=TRANSFER_TIMEOUT_S)
    except credentials.CredentialsError as exc:
        result.errors.append(str(exc))
        result.error_kind = "auth"
        return result
    store = Store.open(Path(job.cache_dir), namespace=job.namespace, read_only=False)
    for scope in job.scopes:
        if time.monotonic() - started > PUSH_DEADLINE_S:  # a registry that trickles: give the lease back
            result.errors.append(f"the push took longer than {PUSH_DEADLINE_S:.0f} s: stopped")
            result.error_kind = "timeout"
            break
        spec = store.prepare_import(scope)  # a lease: gc keeps the blobs while they are pushed
        if spec is None:
            continue
        try:
            push_with_retries(store.layout, client, scope_tag(scope, job.namespace), spec.digest, result)
        except RemoteError as exc:
            result.errors.append(exc.message)
            result.error_kind = result.error_kind or exc.kind
            if exc.kind in {"auth", "denied", "unreachable", "timeout"}:
                break  # the same for every other scope
        except OSError as exc:
            result.errors.append(f"cannot read the local scope: {exc.strerror}")
        finally:
            store.release_import(spec)
    result.seconds = round(time.monotonic() - started, 3)
    return result


class BackgroundPush:
    """The detached push process, as the front-end sees it."""

    def __init__(self, job: PushJob, env: Mapping[str, str]) -> None:
        self.job = job
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "composecache.remote.push"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(env),
                                     start_new_session=True)  # fmt: skip
        assert self.proc.stdin is not None
        with self.proc.stdin:
            self.proc.stdin.write(json.dumps(asdict(job)).encode())

    def wait(self, budget_s: float) -> PushResult | None:
        """The result, or None when the push still runs after `budget_s` (it goes on by itself)."""
        assert self.proc.stdout is not None
        try:
            self.proc.wait(timeout=max(0.0, budget_s))
        except subprocess.TimeoutExpired:
            self.proc.stdout.close()  # the child's last write then fails quietly; nobody waits for it
            return None
        try:
            data = json.loads(self.proc.stdout.read() or b"null")
            return PushResult(**data) if isinstance(data, dict) else None
        except (ValueError, TypeError):
            return PushResult(errors=["the push process failed (run with -v)"], error_kind="local")
        finally:
            self.proc.stdout.close()


def main() -> int:
    try:
        raw = json.loads(sys.stdin.buffer.read())
        job = PushJob(**raw)
        result = run_job(job, os.environ)
    except Exception as exc:  # the detached process reports, it never prints a traceback anywhere
        result = PushResult(errors=[f"push failed: {type(exc).__name__}"], error_kind="local")
    try:
        sys.stdout.write(json.dumps(asdict(result)))
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass  # the front-end stopped waiting: the push went on without it
    return 0


if __name__ == "__main__":
    sys.exit(main())
