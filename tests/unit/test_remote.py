"""The registry tier's logic without a daemon: tags, the remote setting, credentials, the HTTP client."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from composecache.errors import UsageError
from composecache.output import Output
from composecache.remote import credentials
from composecache.remote.client import RegistryClient, RemoteError
from composecache.remote.config import parse_remote
from composecache.remote.naming import TAG_RE, scope_tag
from composecache.remote.push import MIN_WAIT_S, PushResult, push_manifest, push_with_retries
from composecache.remote.tier import Probe, RemoteTier
from composecache.settings import Settings
from composecache.store import oci
from composecache.store.naming import safe_dirname


@pytest.mark.parametrize("scope", ["api", "Api", "github.com/acme/shop/api", "../../etc", "é漢", "x" * 500, "a:b@c"])
def test_scope_tags_are_valid_tags(scope: str) -> None:
    tag = scope_tag(scope)
    assert TAG_RE.match(tag) and len(tag) <= 128
    assert tag == safe_dirname(scope)  # the store's own naming
    assert TAG_RE.match(scope_tag(scope, "tenant-B/Weird Name"))


def test_scope_tags_never_collide() -> None:
    names = ["api", "Api", "API", "a/pi", "a_pi", "a.pi"]
    tags = {scope_tag(name) for name in names} | {scope_tag(name, "other") for name in names}
    assert len(tags) == 2 * len(names)


def test_parse_remote() -> None:
    remote = parse_remote("registry.internal:5000/team/buildcache")
    assert (remote.registry, remote.repository, remote.scheme) == ("registry.internal:5000", "team/buildcache", "https")
    assert parse_remote("127.0.0.1:5000/cc").scheme == "http"  # loopback: plain HTTP
    assert parse_remote("localhost:5000/cc").loopback
    assert parse_remote("http://reg.example:80/cc").insecure
    ref = parse_remote("reg.example/cc", insecure=True).cache_from("api", "default", "sha256:" + "a" * 64)
    assert ref == f"type=registry,ref=reg.example/cc:{scope_tag('api')}@sha256:{'a' * 64},registry.insecure=true"


@pytest.mark.parametrize(
    "text", ["", "buildcache", "reg.example/", "reg.example/Cache", "reg.example/cc:tag", "u:p@reg.example/cc",
             "reg.example/cc@sha256:00", "not a remote", "reg..example/cc"]
)  # fmt: skip
def test_parse_remote_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_remote(text)


def _config(tmp_path: Path, data: dict[str, object]) -> dict[str, str]:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(tmp_path), "PATH": f"{tmp_path}:{os.environ['PATH']}"}


def test_credentials_from_auths(tmp_path: Path) -> None:
    auth = base64.b64encode(b"builder:pw:with:colons").decode()
    env = _config(tmp_path, {"auths": {"https://reg.example:5000": {"auth": auth}}})
    found = credentials.lookup("reg.example:5000", env)
    assert found is not None and (found.username, found.secret) == ("builder", "pw:with:colons")
    assert "pw" not in repr(found)
    assert credentials.lookup("other.example", env) is None


def test_credentials_from_a_helper(tmp_path: Path) -> None:
    helper = tmp_path / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread host\n[ "$host" = reg.example ] || exit 1\n'
                      'echo \'{"Username": "u", "Secret": "tok"}\'\n')  # fmt: skip
    helper.chmod(0o755)
    env = _config(tmp_path, {"credHelpers": {"reg.example": "fake"}})
    found = credentials.lookup("reg.example", env)
    assert found is not None and found.secret == "tok" and "docker-credential-fake" in found.source
    env = _config(tmp_path, {"credsStore": "missing"})
    with pytest.raises(credentials.CredentialsError, match="not installed"):
        credentials.lookup("reg.example", env)


class _Registry(BaseHTTPRequestHandler):
    """A registry's auth behaviour (Basic or a Bearer token service), for the client only."""

    scheme = "basic"
    password = "right"
    seen: list[str] = []  # noqa: RUF012

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen.append(f"{self.command} {self.path} {auth.split(' ')[0]}")
        good = base64.b64encode(f"u:{self.password}".encode()).decode()
        if self.path.startswith("/token"):
            ok = auth == f"Basic {base64.b64encode(b'u:right').decode()}"
            self._reply(200 if ok else 401, body=json.dumps({"token": "T0KEN"}).encode())
            return
        if self.scheme == "basic" and auth != f"Basic {good}":
            self._reply(401, {"WWW-Authenticate": 'Basic realm="r"'})
        elif self.scheme == "bearer" and auth != "Bearer T0KEN":
            port = int(self.server.server_address[1])  # type: ignore[index]
            challenge = f'Bearer realm="http://127.0.0.1:{port}/token",service="reg"'
            self._reply(401, {"WWW-Authenticate": challenge})
        elif "/blobs/" in self.path:
            self._reply(500, body=b'{"errors": [{"code": "UNKNOWN"}]}')
        elif "manifests/missing" in self.path:
            self._reply(404)
        elif "manifests/" in self.path:
            self._reply(200, {"Docker-Content-Digest": "sha256:" + "b" * 64}, b"{}")
        elif self.path.startswith("/v2/"):
            self._reply(200, body=b"{}")
        else:
            self._reply(500, body=b'{"errors": [{"code": "UNKNOWN"}]}')

    do_HEAD = do_GET


@pytest.fixture
def fake_registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_client_authenticates_once(fake_registry: tuple[str, type[_Registry]], scheme: str) -> None:
    host, handler = fake_registry
    handler.scheme = scheme
    client = RegistryClient(parse_remote(f"{host}/cc"), credentials.Credentials("u", "right", "config.json"))
    client.ping()
    assert client.manifest_digest("api") == "sha256:" + "b" * 64
    assert client.manifest_digest("missing") is None
    assert len([line for line in handler.seen if line.endswith(" ")]) == 1  # one anonymous try, then authorised


def test_client_wrong_credentials(fake_registry: tuple[str, type[_Registry]]) -> None:
    host, handler = fake_registry
    handler.scheme = "bearer"
    client = RegistryClient(parse_remote(f"{host}/cc"), credentials.Credentials("u", "wrong", "config.json"))
    with pytest.raises(RemoteError) as caught:
        client.ping()
    assert caught.value.kind == "auth" and "wrong" not in caught.value.message


def test_client_unreachable_and_server_errors(fake_registry: tuple[str, type[_Registry]]) -> None:
    host, handler = fake_registry
    handler.scheme = "none"
    client = RegistryClient(parse_remote(f"{host}/cc"), None)
    with pytest.raises(RemoteError) as caught:
        client.blob_exists("sha256:" + "c" * 64)
    assert caught.value.kind == "server" and "HTTP 500" in caught.value.message
    client.remote = parse_remote("127.0.0.1:1/cc")
    with pytest.raises(RemoteError) as caught:
        client.ping()
    assert caught.value.kind == "unreachable"


def test_tier_imports_only_what_the_host_lacks(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, remote="127.0.0.1:5000/cc")
    tier = RemoteTier.from_settings(settings, Output(), {})
    assert tier is not None
    same, other = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    tier.probe = Probe(digests={"a": same, "b": other, "c": None})
    found = tier.imports_for(["a", "b", "c", "d"], {"a": same, "b": same})
    assert [scope for scope, _ in found] == ["b"]
    assert found[0][1].endswith(f"@{other}")
    tier.failed = "down"
    assert tier.imports_for(["b"], {}) == []


def test_tier_bad_setting_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)
    assert RemoteTier.from_settings(Settings(cache_dir=tmp_path, remote="nonsense"), Output(), {}) is None
    assert capsys.readouterr().err.count("warning") == 1


class _FakeClient:
    """What push_manifest asks of a registry, recorded."""

    def __init__(self, present: set[str]) -> None:
        self.present = set(present)
        self.uploaded: list[tuple[str, bytes]] = []
        self.manifests: dict[str, tuple[bytes, str]] = {}

    def blob_exists(self, digest: str) -> bool:
        return digest in self.present

    def upload_blob(self, digest: str, stream: Any, size: int) -> None:
        data = stream.read()
        assert len(data) == size
        self.uploaded.append((digest, data))
        self.present.add(digest)

    def put_manifest(self, tag: str, body: bytes, media_type: str) -> str:
        self.manifests[tag] = (body, media_type)
        return ""


class _Blobs:
    def __init__(self, root: Path) -> None:
        self.root = root

    def blob(self, hex_digest: str) -> Path:
        return self.root / hex_digest

    def add(self, data: bytes) -> dict[str, object]:
        digest = oci.sha256_digest(data)
        (self.root / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": len(data)}


def test_push_uploads_only_missing_blobs_then_the_manifest(tmp_path: Path) -> None:
    blobs = _Blobs(tmp_path)
    layer, other = blobs.add(b"layer" * 100), blobs.add(b"other")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [layer, other]}).encode()
    digest = str(blobs.add(manifest)["digest"])
    client = _FakeClient(present={str(other["digest"])})
    result = PushResult()
    push_manifest(blobs, client, "api-tag", digest, result)  # type: ignore[arg-type]
    assert [d for d, _ in client.uploaded] == [layer["digest"]]
    assert client.manifests["api-tag"] == (manifest, oci.OCI_INDEX)
    assert (result.uploaded, result.present, result.scopes) == (1, 1, 1)


def test_push_refuses_a_corrupt_local_blob(tmp_path: Path) -> None:
    blobs = _Blobs(tmp_path)
    layer = blobs.add(b"layer")
    blobs.blob(str(layer["digest"]).split(":")[1]).write_bytes(b"longer than it was")
    manifest = json.dumps({"schemaVersion": 2, "manifests": [layer]}).encode()
    digest = str(blobs.add(manifest)["digest"])
    client = _FakeClient(present=set())
    with pytest.raises(RemoteError, match="wrong size"):
        push_manifest(blobs, client, "t", digest, PushResult())  # type: ignore[arg-type]
    assert client.manifests == {}


class _BusyClient(_FakeClient):
    """A registry that answers the first `failures` manifest PUTs with a transient error."""

    def __init__(self, failures: int, kind: str = "server") -> None:
        super().__init__(present=set())
        self.failures, self.kind = failures, kind

    def put_manifest(self, tag: str, body: bytes, media_type: str) -> str:
        if self.failures:
            self.failures -= 1
            raise RemoteError(self.kind, "HTTP 500 (busy)")
        return super().put_manifest(tag, body, media_type)


def _one_scope(tmp_path: Path) -> tuple[_Blobs, str]:
    blobs = _Blobs(tmp_path)
    manifest = json.dumps({"schemaVersion": 2, "manifests": [blobs.add(b"layer")]}).encode()
    return blobs, str(blobs.add(manifest)["digest"])


def test_the_push_tries_a_scope_again_after_a_transient_error_and_uploads_each_blob_once(tmp_path: Path) -> None:
    blobs, digest = _one_scope(tmp_path)
    client, slept = _BusyClient(failures=2), list[float]()
    push_with_retries(blobs, client, "t", digest, PushResult(), sleep=slept.append)  # type: ignore[arg-type]
    assert client.manifests and len(client.uploaded) == 1 and len(slept) == 2


@pytest.mark.parametrize(("failures", "kind"), [(3, "server"), (1, "denied"), (1, "auth")])
def test_the_push_gives_up_after_its_retries_or_at_once_when_refused(tmp_path: Path, failures: int,
                                                                     kind: str) -> None:  # fmt: skip
    blobs, digest = _one_scope(tmp_path)
    client, slept = _BusyClient(failures, kind), list[float]()
    with pytest.raises(RemoteError) as caught:
        push_with_retries(blobs, client, "t", digest, PushResult(), sleep=slept.append)  # type: ignore[arg-type]
    assert caught.value.kind == kind and client.manifests == {}
    assert len(slept) == (2 if kind == "server" else 0)


def test_the_push_waits_as_long_as_the_export_took(tmp_path: Path) -> None:
    tier = RemoteTier.from_settings(Settings(cache_dir=tmp_path, remote="127.0.0.1:5000/cc"), Output(), {})
    assert tier is not None
    assert tier.wait_budget() == MIN_WAIT_S  # no export seen
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "blobs").symlink_to(tmp_path)
    tier.observe("api", staging, exported=False)
    assert tier.timers["api"].began is None  # only our blobs link: BuildKit has not begun
    (staging / "ingest").mkdir()
    tier.observe("api", staging, exported=False)
    began = tier.timers["api"].began
    assert began is not None
    tier.timers["api"].began = began - 7.5
    tier.observe("api", staging, exported=True)
    assert 7.5 <= tier.wait_budget() < 9
    fixed = RemoteTier.from_settings(Settings(cache_dir=tmp_path, remote="127.0.0.1:5000/cc", remote_wait_s=0.0),
                                     Output(), {})  # fmt: skip
    assert fixed is not None and fixed.wait_budget() == 0.0


def test_remote_option(tmp_path: Path) -> None:
    from composecache.cli import parse_own_options

    settings, rest, _ = parse_own_options(["--remote", "reg.example/cc", "up"], Settings(cache_dir=tmp_path))
    assert settings.remote == "reg.example/cc" and rest == ["up"]
    with pytest.raises(UsageError):
        parse_own_options(["--remote=reg.example/CC", "up"], Settings(cache_dir=tmp_path))
    env = {
        "COMPOSECACHE_REMOTE": "reg.example/cc",
        "COMPOSECACHE_REMOTE_INSECURE": "1",
        "COMPOSECACHE_REMOTE_WAIT": "x",
    }
    from_env = Settings.from_env(env)
    assert from_env.remote == "reg.example/cc" and from_env.remote_insecure and from_env.remote_wait_s is None


def test_a_registry_down_is_one_fall_back_line_and_strict_fails_after_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from composecache.cached_build import CachedBuild, CacheRequest
    from composecache.errors import StrictFallback

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connection refused
    settings = Settings(cache_dir=tmp_path / "cache", remote=f"127.0.0.1:{port}/cc")
    request = CacheRequest(key="api", export_scope="shop/api", import_scopes=("shop/api",))
    monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    build = CachedBuild(settings, Output())
    slots = build.prepare([request])  # no raise here: the build still runs and cleans up
    assert slots["api"].extra_from == [] and build.remote is not None and build.remote.failed
    build.finish(summary=False)
    with pytest.raises(StrictFallback, match="Connection refused"):
        build.raise_if_strict()
    monkeypatch.delenv("COMPOSECACHE_STRICT")
    capsys.readouterr()
    CachedBuild(settings, Output()).prepare([request])
    assert capsys.readouterr().err.count("composecache: warning: registry") == 1
