"""The compose project, remembered: which services build, their x-composecache settings and the schema's verdict.

`compose config` costs 100-300 ms on every build, and its answer depends only
on what compose reads: the compose files, the env files, the variables the
files interpolate (and COMPOSE_* / DOCKER_*), the project flags (-f, -p,
--profile, --env-file, --project-directory), the working directory and the
compose binary.  That is the key; the value is the little the build path
needs (never build args or environment: no secrets in the memo).

A project that pulls in other files (`include`, `extends` with a file) is not
remembered: compose is asked every time.  If a build with a remembered
project fails, the front-end asks compose again and, when the project had
changed in a way that could break the override, runs compose once more
(frontend.py): a stale memo can never fail a build.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from composecache.compose.files import ComposeFiles
from composecache.compose.project import ProjectModel, ServiceModel
from composecache.session import toolchain
from composecache.session.memo import Memo, fingerprint
from composecache.session.memo import stamp as file_stamp

KIND = "project"
FORMAT = 3  # 2: each service keeps its x-composecache verdict; 3: its image, shape and shared builds
MAX_FILE_BYTES = 8 << 20
VARIABLE_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
# Other files compose would read: not remembered (a top-level `include:`, any `extends`).
PULLS_IN_FILES_RE = re.compile(rb"(?m)^include\s*:|\bextends\b")
ENV_PREFIXES = ("COMPOSE_", "DOCKER_")


def _read(path: Path) -> bytes | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


def _env_file_candidates(files: ComposeFiles, env_files: Iterable[str], env: Mapping[str, str], cwd: Path) -> set[Path]:
    names = [*env_files, *(part for part in (env.get("COMPOSE_ENV_FILES") or "").split(",") if part)]
    candidates = {cwd / ".env", files.project_dir / ".env"}
    for name in names:
        candidates.update({cwd / name, files.project_dir / name})
    return candidates


def project_key(
    compose: list[str],
    config_argv: list[str],
    files: ComposeFiles,
    env_files: Iterable[str],
    env: Mapping[str, str],
    cwd: Path,
) -> str | None:
    """The memo key of the project, or None when it must be asked every time."""
    texts: list[bytes] = []
    file_parts = []
    for name in files.files:
        path = Path(name) if os.path.isabs(name) else cwd / name
        data = _read(path)
        if data is None or PULLS_IN_FILES_RE.search(data) or data.lstrip().startswith(b"{"):
            return None
        texts.append(data)
        file_parts.append((str(path), hashlib.sha256(data).hexdigest()))
    env_parts = []
    for path in sorted(_env_file_candidates(files, env_files, env, cwd)):
        data = _read(path) if path.exists() else b""
        if data is None:
            return None
        texts.append(data)
        env_parts.append((str(path), hashlib.sha256(data).hexdigest()))
    variables = {name for text in texts for name in VARIABLE_RE.findall(text.decode("utf-8", "replace"))}
    variables.update(name for name in env if name.startswith(ENV_PREFIXES))
    plugin = toolchain.find_plugin("compose", env)
    return fingerprint(
        FORMAT, compose, file_stamp(compose[0]), str(plugin), file_stamp(plugin) if plugin else "-",
        str(cwd), config_argv, file_parts, env_parts, sorted((name, env.get(name)) for name in variables),
    )  # fmt: skip


def to_json(model: ProjectModel, project_dir: Path) -> dict[str, Any]:
    services = {name: {"builds": service.builds, "extension": service.extension, "problems": service.problems,
                       "image": service.image_repository if service.builds else None,
                       "shape": service.shape_digest(project_dir) if service.builds else None}
                for name, service in model.services.items()}  # fmt: skip
    return {"name": model.name, "services": services, "shared": model.shared_builds()}


def from_json(value: Any) -> ProjectModel | None:
    """A model for the build path (no build sections: only whether each service builds)."""
    if not isinstance(value, dict) or not isinstance(value.get("services"), dict):
        return None
    services = {}
    for name, entry in value["services"].items():
        if not isinstance(entry, dict):
            return None
        shape = entry.get("shape")
        if entry.get("builds") and not isinstance(shape, str):
            return None
        problems = entry.get("problems")
        if problems is not None and not (isinstance(problems, list) and all(isinstance(p, str) for p in problems)):
            return None
        image = entry.get("image")
        services[name] = ServiceModel(name=name, build={} if entry.get("builds") else None,
                                      image=image if isinstance(image, str) else None,
                                      extension=entry.get("extension"), problems=problems,
                                      remembered_shape=shape)  # fmt: skip
    name = value.get("name")
    shared = value.get("shared")
    if not isinstance(shared, dict) or not all(isinstance(v, str) and v in services for v in shared.values()):
        return None
    return ProjectModel(name=name if isinstance(name, str) else None, services=services, remembered=True,
                        remembered_shared=shared)  # fmt: skip


def recall(memo: Memo, key: str | None) -> ProjectModel | None:
    return from_json(memo.get(KIND, key)) if key is not None else None


def remember(memo: Memo, key: str | None, model: ProjectModel, project_dir: Path) -> None:
    if key is not None and not model.approximate:
        memo.put(KIND, key, to_json(model, project_dir))


def building(model: ProjectModel) -> dict[str, Any]:
    """What the override depends on: the services that build, with their settings."""
    return {name: service.extension for name, service in model.services.items() if service.builds}
