"""A small OCI distribution client: bounded timeouts, registry auth, no dependencies.

Only what the tier needs: the /v2/ ping, HEAD/GET/PUT of manifests, HEAD of
blobs and monolithic blob uploads.  Auth as registries do it (distribution,
Harbor, zot, cloud registries): a 401 names a Basic realm or a Bearer token
service; the client answers once with the docker config's credentials and
keeps the token for the rest of the run.  Every failure is a RemoteError with a
kind and a message that holds no credential and no token.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from composecache.remote.config import Remote
from composecache.remote.credentials import Credentials

PROBE_TIMEOUT_S = 3.0  # connect and each read of a small request
TRANSFER_TIMEOUT_S = 30.0  # each socket operation of an upload (not the whole upload)
MAX_BODY = 4 << 20  # manifests and error bodies: BuildKit's cache manifests are a few kB
CHUNK = 1 << 20
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')

UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
AUTH = "auth"
SERVER = "server"
GARBAGE = "garbage"
DENIED = "denied"  # authenticated, but may not push (a read-only token, a read-only registry)


class RemoteError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


class RegistryClient:
    def __init__(self, remote: Remote, credentials: Credentials | None, *, timeout: float = PROBE_TIMEOUT_S) -> None:
        self.remote = remote
        self.credentials = credentials
        self.timeout = timeout
        self._authorization: str | None = None
        self._push_scope = False

    # --- transport -------------------------------------------------------------------------------

    def _connection(self, netloc: str, scheme: str, timeout: float) -> http.client.HTTPConnection:
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=timeout)
        import ssl  # only for HTTPS registries: ~10 ms of import on the build path otherwise

        context = ssl.create_default_context()
        if self.remote.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(netloc, timeout=timeout, context=context)

    def _send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | BinaryIO | None,
              timeout: float) -> Response:  # fmt: skip
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        what = f"{method} {parts.path}"
        connection = self._connection(parts.netloc, parts.scheme, timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            response = connection.getresponse()
            data = response.read(MAX_BODY + 1)
            if len(data) > MAX_BODY:
                raise RemoteError(GARBAGE, f"{self.remote.registry} answered {what} with more than {MAX_BODY} bytes")
            return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        except TimeoutError:
            raise RemoteError(TIMEOUT, f"{self.remote.registry} did not answer {what} within {timeout:.0f} s") from None
        except (http.client.HTTPException, ValueError) as exc:
            raise RemoteError(GARBAGE, f"{self.remote.registry} answered {what} with garbage "
                              f"({type(exc).__name__})") from None  # fmt: skip
        except OSError as exc:
            if type(exc).__name__.startswith("SSL"):  # ssl.SSLError, without importing ssl for plain HTTP
                raise RemoteError(UNREACHABLE, f"TLS with {self.remote.registry} failed "
                                  f"({getattr(exc, 'reason', None) or type(exc).__name__}); "
                                  "COMPOSECACHE_REMOTE_INSECURE=1 skips the certificate check") from None  # fmt: skip
            raise RemoteError(UNREACHABLE, f"cannot reach {self.remote.registry} "
                              f"({exc.strerror or type(exc).__name__})") from None  # fmt: skip
        finally:
            connection.close()

    def url(self, path: str) -> str:
        return f"{self.remote.scheme}://{self.remote.registry}{path}"

    def request(self, method: str, path_or_url: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | BinaryIO | None = None, timeout: float | None = None) -> Response:  # fmt: skip
        """One request, authenticated on a 401 challenge (retried once); a body stream is sent once only."""
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        limit = self.timeout if timeout is None else timeout
        sent = {**(headers or {})}
        if urllib.parse.urlsplit(url).netloc != self.remote.registry:
            # An upload Location on another host (a storage backend, or a hostile registry): it gets
            # no credentials, as a redirect target would not.
            return self._send(method, url, sent, body, limit)
        if self._authorization:
            sent["Authorization"] = self._authorization
        response = self._send(method, url, sent, body, limit)
        if response.status == 401 and (self._authorization is None or self._push_scope_needed(method)):
            if not isinstance(body, (bytes, type(None))):
                raise RemoteError(AUTH, f"{self.remote.registry} asked for credentials in the middle of an upload")
            self._authenticate(response, push=method not in {"GET", "HEAD"})
            sent["Authorization"] = self._authorization or ""
            response = self._send(method, url, sent, body, limit)
        if response.status == 401:
            who = f"the credentials from the {self.credentials.source}" if self.credentials else "anonymous access"
            raise RemoteError(AUTH, f"{self.remote.registry} rejected {who} (HTTP 401)")
        return response

    def _push_scope_needed(self, method: str) -> bool:
        return method not in {"GET", "HEAD"} and not self._push_scope

    # --- auth --------------------------------------------------------------------------------------

    def _basic(self) -> str | None:
        if self.credentials is None or self.credentials.is_token:
            return None
        raw = f"{self.credentials.username}:{self.credentials.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _authenticate(self, challenge: Response, *, push: bool) -> None:
        header = challenge.header("www-authenticate")
        scheme = header.split(" ", 1)[0].lower()
        if scheme == "basic":
            self._authorization = self._basic()
            if self._authorization is None:
                raise RemoteError(AUTH, f"{self.remote.registry} wants credentials and the docker config has none "
                                  "for it (docker login)")  # fmt: skip
            self._push_scope = True
            return
        if scheme != "bearer":
            raise RemoteError(AUTH, f"{self.remote.registry} asks for an unknown auth scheme {scheme[:20]!r}")
        self._authorization = f"Bearer {self._bearer_token(dict(_CHALLENGE_PARAM.findall(header)), push)}"
        self._push_scope = push

    def _bearer_token(self, params: dict[str, str], push: bool) -> str:
        """A token from the registry's token service (docker's token and OAuth refresh-token flows)."""
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RemoteError(GARBAGE, f"{self.remote.registry} sent a token challenge without a realm")
        actions = "pull,push" if push else "pull"
        query = {"scope": f"repository:{self.remote.repository}:{actions}"}
        if params.get("service"):
            query["service"] = params["service"]
        headers: dict[str, str] = {}
        basic = self._basic()
        method, body = "GET", None
        if self.credentials is not None and self.credentials.is_token:  # docker's OAuth refresh-token flow
            method = "POST"
            form = {**query, "grant_type": "refresh_token", "refresh_token": self.credentials.secret,
                    "client_id": "composecache"}  # fmt: skip
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            token_url = realm
        else:
            token_url = f"{realm}{'&' if '?' in realm else '?'}{urllib.parse.urlencode(query)}"
            if basic:
                headers["Authorization"] = basic
        answer = self._send(method, token_url, headers, body, self.timeout)
        if answer.status in {401, 403}:
            who = f"the credentials from the {self.credentials.source}" if self.credentials else "anonymous access"
            raise RemoteError(AUTH, f"the token service of {self.remote.registry} rejected {who} "
                              f"(HTTP {answer.status})")  # fmt: skip
        if answer.status != 200:
            raise RemoteError(SERVER, f"the token service of {self.remote.registry} answered HTTP {answer.status}")
        try:
            data = json.loads(answer.body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RemoteError(GARBAGE, f"the token service of {self.remote.registry} answered garbage")
        return token

    # --- the registry API ----------------------------------------------------------------------------

    def ping(self) -> None:
        response = self.request("GET", "/v2/")
        if response.status != 200:
            raise _unexpected(self.remote, "GET /v2/", response)

    def manifest_digest(self, tag: str) -> str | None:
        """The digest the tag names now (None: no such tag)."""
        response = self._manifest("HEAD", tag)
        if response is None:
            return None
        digest = response.header("docker-content-digest")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            # Some registries send no digest on HEAD: fetch the manifest and hash it.
            body = self.get_manifest(tag)
            if body is None:
                return None
            import hashlib

            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return digest

    def get_manifest(self, reference: str) -> bytes | None:
        response = self._manifest("GET", reference)
        return None if response is None else response.body

    def _manifest(self, method: str, reference: str) -> Response | None:
        """HEAD or GET of a manifest by tag or digest (None: there is none)."""
        path = f"/v2/{self.remote.repository}/manifests/{reference}"
        response = self.request(method, path, headers={"Accept": ", ".join(INDEX_TYPES)})
        if response.status == 404:
            return None
        if response.status != 200:
            raise _unexpected(self.remote, f"{method} manifest {reference}", response)
        return response

    def blob_exists(self, digest: str) -> bool:
        response = self.request("HEAD", f"/v2/{self.remote.repository}/blobs/{digest}")
        if response.status == 404:
            return False
        if response.status == 200:
            return True
        raise _unexpected(self.remote, "HEAD blob", response)

    def upload_blob(self, digest: str, stream: BinaryIO, size: int) -> None:
        start = self.request("POST", f"/v2/{self.remote.repository}/blobs/uploads/", headers={"Content-Length": "0"})
        if start.status not in {202, 201}:
            raise _unexpected(self.remote, "POST blob upload", start)
        location = start.header("location")
        if not location:
            raise RemoteError(GARBAGE, f"{self.remote.registry} started an upload without a Location")
        target = urllib.parse.urljoin(self.url(f"/v2/{self.remote.repository}/blobs/uploads/"), location)
        target += ("&" if "?" in target else "?") + urllib.parse.urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        done = self.request("PUT", target, headers=headers, body=stream, timeout=TRANSFER_TIMEOUT_S)
        if done.status not in {201, 204}:
            raise _unexpected(self.remote, "PUT blob", done)

    def try_upload(self) -> None:
        """Start a blob upload and cancel it: whether this client may push (nothing is written)."""
        start = self.request("POST", f"/v2/{self.remote.repository}/blobs/uploads/", headers={"Content-Length": "0"})
        if start.status not in {202, 201}:
            raise _unexpected(self.remote, "POST blob upload", start)
        location = start.header("location")
        if location:
            target = urllib.parse.urljoin(self.url(f"/v2/{self.remote.repository}/blobs/uploads/"), location)
            self.request("DELETE", target)  # best effort: distribution purges abandoned uploads anyway

    def put_manifest(self, tag: str, body: bytes, media_type: str) -> str:
        path = f"/v2/{self.remote.repository}/manifests/{tag}"
        response = self.request("PUT", path, headers={"Content-Type": media_type}, body=body,
                                timeout=TRANSFER_TIMEOUT_S)  # fmt: skip
        if response.status not in {200, 201, 204}:
            raise _unexpected(self.remote, f"PUT manifest {tag}", response)
        return response.header("docker-content-digest")


def _unexpected(remote: Remote, what: str, response: Response) -> RemoteError:
    code = _error_code(response.body)
    detail = f" ({code})" if code else ""
    if response.status == 403 or code in {"DENIED", "UNAUTHORIZED"}:
        return RemoteError(DENIED, f"{remote.registry} denied {what} (HTTP {response.status}{detail})")
    if code == "UNSUPPORTED" or response.status == 405:
        return RemoteError(DENIED, f"{remote.registry} does not accept {what} (HTTP {response.status}{detail}; "
                           "read-only?)")  # fmt: skip
    if response.status >= 500:
        return RemoteError(SERVER, f"{remote.registry} failed {what} (HTTP {response.status}{detail})")
    return RemoteError(GARBAGE, f"{remote.registry} answered {what} with HTTP {response.status}{detail}")


def _error_code(body: bytes) -> str:
    """The first error code of a distribution error body (`{"errors": [{"code": ...}]}`), if any."""
    try:
        errors = json.loads(body).get("errors")
        code = errors[0].get("code") if isinstance(errors, list) and errors else ""
    except (ValueError, AttributeError, TypeError):
        return ""
    return re.sub(r"[^A-Z_]", "", str(code).upper())[:40]
