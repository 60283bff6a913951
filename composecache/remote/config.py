"""What `--remote REGISTRY/REPOSITORY` (or COMPOSECACHE_REMOTE) names, checked once.

`registry.internal:5000/buildcache`, `127.0.0.1:5000/team/cache`: a registry
host (a name or an IP, optionally with a port) and a repository path in the
OCI distribution grammar.  Plain HTTP is used for a loopback registry and when
COMPOSECACHE_REMOTE_INSECURE=1 (then BuildKit gets `registry.insecure=true`
too: plain HTTP or a certificate it does not check).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from composecache.errors import UsageError
from composecache.remote.naming import scope_tag
from composecache.settings import DEFAULT_NAMESPACE

# distribution/reference: path components, lower-case, separated by `/`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                     r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")  # fmt: skip
REPOSITORY_MAX = 255
HINT = "give it as REGISTRY/REPOSITORY, e.g. registry.internal:5000/buildcache"


@dataclass(frozen=True)
class Remote:
    registry: str  # host[:port], as docker config keys name it
    repository: str
    insecure: bool = False  # plain HTTP / unchecked TLS, for BuildKit too

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def loopback(self) -> bool:
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry[1:].split("]")[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def scheme(self) -> str:
        return "http" if self.insecure or self.loopback else "https"

    def ref(self, scope: str, namespace: str = DEFAULT_NAMESPACE, digest: str | None = None) -> str:
        tag = scope_tag(scope, namespace)
        return f"{self.name}:{tag}" + (f"@{digest}" if digest else "")

    def cache_from(self, scope: str, namespace: str, digest: str | None) -> str:
        return ",".join(["type=registry", f"ref={self.ref(scope, namespace, digest)}", *self._insecure_attr()])

    def cache_to(self, scope: str, namespace: str, mode: str) -> str:
        return ",".join(["type=registry", f"ref={self.ref(scope, namespace)}", f"mode={mode}", "ignore-error=true",
                         *self._insecure_attr()])  # fmt: skip

    def _insecure_attr(self) -> list[str]:
        return ["registry.insecure=true"] if self.insecure else []


def parse_remote(text: str, *, insecure: bool = False) -> Remote:
    """`REGISTRY/REPOSITORY` -> Remote; UsageError naming what is wrong."""
    value = text.strip()
    for scheme in ("https://", "http://"):
        if value.startswith(scheme):
            insecure = insecure or scheme == "http://"
            value = value[len(scheme) :]
    registry, sep, repository = value.partition("/")
    if not sep or not registry or not repository:
        raise UsageError(f"--remote {text!r} names no repository", hint=HINT)
    if "@" in value or ":" in repository or "?" in value or "#" in value:
        raise UsageError(f"--remote {text!r}: a remote is a repository, without a tag, digest or credentials",
                         hint=HINT)  # fmt: skip
    if not HOST_RE.match(registry) or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise UsageError(f"--remote {text!r}: {registry!r} is not a registry host", hint=HINT)
    if not REPOSITORY_RE.match(repository) or len(repository) > REPOSITORY_MAX:
        raise UsageError(f"--remote {text!r}: {repository!r} is not a valid repository name "
                         "(lower-case letters, digits, separators . _ - and /)", hint=HINT)  # fmt: skip
    return Remote(registry=registry, repository=repository, insecure=insecure)
