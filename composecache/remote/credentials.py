"""Registry credentials from the session's docker config, the way the docker CLI and buildx find them.

`$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): `credHelpers`
for this registry, else `credsStore`, run as `docker-credential-<name> get`
with the registry on stdin; else `auths[<registry>]` (`auth` = base64
`user:password`, or `username`/`password`); else anonymous.  Only this process
ever holds them: never written anywhere, never printed (Credentials' repr
hides them), never passed on the command line of anything.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from composecache.session.toolchain import docker_config_dir

HELPER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    secret: str = field(repr=False)  # a password, or an identity token when username is "<token>"
    source: str = ""  # "config.json", "credential helper docker-credential-pass": for messages

    @property
    def is_token(self) -> bool:
        return self.username == "<token>"


class CredentialsError(Exception):
    """The docker config names credentials that cannot be read (message without any secret)."""


def _config(env: Mapping[str, str]) -> dict[str, object]:
    path = docker_config_dir(env) / "config.json"
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read {path}: {type(exc).__name__}") from None
    return data if isinstance(data, dict) else {}


def _keys(registry: str) -> list[str]:
    """The config keys docker accepts for a registry (`docker login` writes the bare host)."""
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"]


def _from_helper(helper: str, registry: str, env: Mapping[str, str]) -> Credentials | None:
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run([program, "get"], input=registry, capture_output=True, text=True,
                                timeout=HELPER_TIMEOUT_S, env=dict(env), check=False)  # fmt: skip
    except FileNotFoundError:
        raise CredentialsError(f"{program} (credential helper of the docker config) is not installed") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"{program} did not answer within {HELPER_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise CredentialsError(f"{program} cannot run: {exc.strerror}") from None
    if result.returncode != 0:
        # "credentials not found in native keychain": anonymous, as docker does.
        return None
    try:
        answer = json.loads(result.stdout)
        return Credentials(str(answer["Username"]), str(answer["Secret"]), f"credential helper {program}")
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"{program} answered something that is not credentials") from None


def lookup(registry: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials docker would use for `registry` (None: anonymous); CredentialsError if unreadable."""
    env = os.environ if env is None else env
    config = _config(env)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict) and isinstance(helpers.get(registry), str) and helpers[registry]:
        return _from_helper(helpers[registry], registry, env)
    store = config.get("credsStore")
    auths = config.get("auths")
    if isinstance(store, str) and store:
        found = _from_helper(store, registry, env)
        if found is not None:
            return found
    return _from_auths(auths, registry) if isinstance(auths, dict) else None


def _from_auths(auths: dict[str, object], registry: str) -> Credentials | None:
    """What `docker login` wrote for the registry into config.json's `auths` (None: nothing)."""
    for key in _keys(registry):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("identitytoken"), str) and entry["identitytoken"]:
            return Credentials("<token>", entry["identitytoken"], "config.json")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialsError(f"the auth entry for {registry} in config.json is not base64") from None
            if sep:
                return Credentials(user, password, "config.json")
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return Credentials(entry["username"], entry["password"], "config.json")
    return None


def config_path(env: Mapping[str, str]) -> Path:
    return docker_config_dir(env) / "config.json"
