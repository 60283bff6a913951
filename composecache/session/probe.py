"""What this session's tools and daemon can do: asked once, then remembered in the memo.

`toolchain.probe` (compose version, buildx inspect, docker info) and seeding's
look-up of the daemon's containerd store, keyed by the stat of every input:
the docker, compose and buildx binaries, the docker config and the buildx
state, the variables that choose a daemon or a builder, and the daemon's
socket (a restarted daemon listens on a new socket, which is a new key).
Remembered only when every answer came back clean; a daemon reached over TCP
or through a docker context is asked every time.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from composecache.errors import ComposecacheError
from composecache.session import seeding, toolchain
from composecache.session.memo import Memo, content_stamp, fingerprint
from composecache.session.memo import stamp as file_stamp

KIND = "probe"
FORMAT = 1
KEY_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_API_VERSION", "DOCKER_CERT_PATH",
           "DOCKER_TLS_VERIFY", "BUILDX_BUILDER", "BUILDX_CONFIG", "PATH", "HOME", "COMPOSECACHE_REAL_DOCKER",
           "COMPOSECACHE_REAL_COMPOSE", "COMPOSECACHE_CTR", seeding.ADDRESS_ENV, seeding.NAMESPACE_ENV,
           seeding.SEED_ENV)  # fmt: skip
DEFAULT_HOST = "unix:///var/run/docker.sock"


class Facts(NamedTuple):
    tools: toolchain.Toolchain | None  # None: docker or compose could not be run
    daemon: seeding.DaemonStore | str  # the store seeding may use, or why it cannot
    remembered: bool = False


def facts(env: Mapping[str, str], memo: Memo) -> Facts:
    """The session's facts: from the memo when nothing they depend on changed, else asked (and remembered)."""
    key = probe_key(env)
    if key is not None:
        remembered = _from_json(memo.get(KIND, key))
        if remembered is not None:
            return remembered
    try:
        tools = toolchain.probe(env)
    except ComposecacheError as exc:
        return Facts(None, str(exc))
    daemon = _locate(tools.daemon_info, env)
    complete = tools.compose_version is not None and tools.builder.error is None and tools.daemon_info is not None
    if key is not None and complete:
        memo.put(KIND, key, _to_json(tools, daemon))
    return Facts(tools, daemon)


BUILDER_KIND = "builder"


def builder_facts(
    docker: Path, env: Mapping[str, str], memo: Memo, global_args: Sequence[str] = (), builder: str | None = None
) -> tuple[toolchain.Builder, seeding.DaemonStore | str]:
    """`toolchain.probe_builder` and where the daemon keeps its content, remembered like `facts`.

    For `composecache docker build`: docker's global options (-H, --context...) can point anywhere,
    so a build that has any is asked every time.
    """
    base = None if global_args else probe_key(env)
    key = fingerprint(base, str(docker), builder) if base is not None else None
    if key is not None:
        remembered = _builder_from_json(memo.get(BUILDER_KIND, key))
        if remembered is not None:
            return remembered
    found, info = toolchain.probe_builder(docker, env, global_args, builder)
    daemon = _locate(info, env)
    if key is not None and found.error is None and info is not None:
        memo.put(BUILDER_KIND, key, _builder_to_json(found, daemon))
    return found, daemon


def _locate(info: Mapping[str, Any] | None, env: Mapping[str, str]) -> seeding.DaemonStore | str:
    """The daemon's store seeding may use, or why it cannot."""
    try:
        return seeding.locate(info, env)
    except seeding.SeedUnavailable as exc:
        return str(exc)


def _current_context(config_file: Path) -> str | None:
    """config.json's currentContext ("" when unset or no file; None when unreadable)."""
    try:
        data = json.loads(config_file.read_text())
    except FileNotFoundError:
        return ""
    except (OSError, ValueError):
        return None
    value = data.get("currentContext") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _current_builder(buildx: Path) -> str:
    """The builder buildx's `current` file selects ("" for the default: no file, or no name in it).

    buildx writes the file on its first use in a session, with the same default selection.
    """
    try:
        data = json.loads((buildx / "current").read_text())
    except FileNotFoundError:
        return ""
    except (OSError, ValueError):
        return content_stamp(buildx / "current")
    name = data.get("Name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else content_stamp(buildx / "current")


def _dir_stamps(directory: Path) -> list[tuple[str, str]]:
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError:
        return []
    return [(name, content_stamp(directory / name)) for name in names]


def probe_key(env: Mapping[str, str]) -> str | None:
    """The memo key of the facts, or None when they must be asked every time."""
    try:
        docker = toolchain.real_docker(env)
        compose = toolchain.compose_command(env)
    except ComposecacheError:
        return None
    config = toolchain.docker_config_dir(env)
    host = env.get("DOCKER_HOST")
    if not host:
        context = _current_context(config / "config.json")
        if env.get("DOCKER_CONTEXT", "default") not in {"", "default"} or context not in {"", "default"}:
            return None  # a context can name any endpoint: asked every time
        host = DEFAULT_HOST
    if not host.startswith("unix://"):
        return None
    socket = host[len("unix://") :]
    try:
        if not stat.S_ISSOCK(Path(socket).stat().st_mode):
            return None
    except OSError:
        return None
    buildx = Path(env.get("BUILDX_CONFIG") or config / "buildx")
    plugins = [toolchain.find_plugin(name, env) for name in ("compose", "buildx")]
    return fingerprint(
        FORMAT,
        [(name, env.get(name)) for name in KEY_ENV],
        str(docker), file_stamp(docker),
        compose, file_stamp(compose[0]),
        [(str(plugin), file_stamp(plugin)) for plugin in plugins if plugin is not None],
        content_stamp(config / "config.json"), _current_builder(buildx), _dir_stamps(buildx / "instances"),
        socket, file_stamp(socket),
    )  # fmt: skip


def _daemon_to_json(daemon: seeding.DaemonStore | str) -> Any:
    if isinstance(daemon, str):
        return daemon
    return {"address": str(daemon.address), "namespace": daemon.namespace, "ctr": str(daemon.ctr),
            "content_blobs": str(daemon.content_blobs) if daemon.content_blobs is not None else None,
            "snapshotter": daemon.snapshotter}  # fmt: skip


def _daemon_from_json(raw: Any) -> seeding.DaemonStore | str:
    """Raises KeyError / TypeError / ValueError for anything unexpected."""
    if isinstance(raw, str):
        return raw
    blobs = Path(raw["content_blobs"]) if raw["content_blobs"] else None
    return seeding.DaemonStore(address=Path(raw["address"]), namespace=str(raw["namespace"]), ctr=Path(raw["ctr"]),
                               content_blobs=blobs, snapshotter=str(raw["snapshotter"]))  # fmt: skip


def _builder_to_json(builder: toolchain.Builder, daemon: seeding.DaemonStore | str) -> dict[str, Any]:
    return {"driver": builder.driver, "containerd_store": builder.containerd_store, "daemon": _daemon_to_json(daemon)}


def _builder_from_json(value: Any) -> tuple[toolchain.Builder, seeding.DaemonStore | str] | None:
    try:
        driver, store = value["driver"], value["containerd_store"]
        builder = toolchain.Builder(driver=driver if isinstance(driver, str) else None,
                                    containerd_store=None if store is None else bool(store))  # fmt: skip
        return builder, _daemon_from_json(value["daemon"])
    except (KeyError, TypeError, ValueError):
        return None


def _to_json(tools: toolchain.Toolchain, daemon: seeding.DaemonStore | str) -> dict[str, Any]:
    return {
        "docker": str(tools.docker),
        "compose": tools.compose,
        "compose_version_text": tools.compose_version_text,
        "buildx_available": tools.buildx_available,
        **_builder_to_json(tools.builder, daemon),
    }


def _from_json(value: Any) -> Facts | None:
    """Facts from a memo entry; None for anything unexpected (then: asked again)."""
    try:
        compose = value["compose"]
        if not (isinstance(compose, list) and compose and all(isinstance(part, str) for part in compose)):
            return None
        text = str(value["compose_version_text"])
        version = toolchain.parse_version(text)
        if version is None:
            return None
        remembered = _builder_from_json(value)
        if remembered is None:
            return None
        builder, daemon = remembered
        tools = toolchain.Toolchain(docker=Path(value["docker"]), compose=compose, compose_version=version,
                                    compose_version_text=text, builder=builder,
                                    buildx_available=bool(value["buildx_available"]))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
    return Facts(tools, daemon, remembered=True)
