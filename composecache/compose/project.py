"""The compose project as compose itself resolves it.

`docker compose <the user's project flags> config` does profiles, env files,
include, extends, interpolation and merging; its YAML output keeps the `x-`
fields inside services (the JSON output drops them, on 2.26.1 and 2.40.3).
Without a working compose (for --dry-run only) a single file is read as is,
and the preview says it is approximate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from composecache import schema

EXTENSION = "x-composecache"


class ModelError(Exception):
    """The project could not be read; `message` is what compose (or the parser) said."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceModel(NamedTuple):
    name: str
    build: dict[str, Any] | None
    image: str | None
    extension: Any = None  # the raw x-composecache value, if any
    problems: list[str] | None = None  # its schema errors (None: not checked yet)
    remembered_shape: str | None = None  # shape_digest() as remembered

    def shape_digest(self, project_dir: Path) -> str:
        """A short digest of where the build's context and Dockerfile sit, relative to the project:
        what tells apart unrelated projects that share a directory name (used without git)."""
        if self.remembered_shape is not None:
            return self.remembered_shape
        import hashlib
        import json
        import os

        build = self.build or {}
        context = str(build.get("context", "."))
        if "://" not in context and os.path.isabs(context):
            context = os.path.relpath(context, project_dir)
        shape = [context, str(build.get("dockerfile", "")), str(build.get("target", ""))]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:8]

    @property
    def builds(self) -> bool:
        return self.build is not None

    @property
    def image_repository(self) -> str | None:
        """The image this service builds, without tag or digest (None: compose names the image itself)."""
        if not self.image:
            return None
        name = self.image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        if ":" in last:
            name = name[: len(name) - len(last)] + last.split(":", 1)[0]
        return name or None


class ProjectModel(NamedTuple):
    name: str | None
    services: dict[str, ServiceModel]
    approximate: bool = False
    remembered: bool = False  # from the memo (model_memo.py): only whether services build, no build sections
    remembered_shared: dict[str, str] | None = None  # shared_builds() as remembered

    def shared_builds(self) -> dict[str, str]:
        """Services that build one image from one identical build section: follower -> the first of them.

        Compose builds such an image once (or again from the session's own build cache): one
        scope and one export serve them all.
        """
        if self.remembered_shared is not None:
            return dict(self.remembered_shared)
        import json

        first: dict[str, str] = {}
        followers = {}
        for name, service in self.services.items():
            if not service.image or service.build is None:
                continue
            key = json.dumps([service.image, service.build, service.extension], sort_keys=True, default=str)
            if key in first:
                followers[name] = first[key]
            else:
                first[key] = name
        return followers


def load_yaml(text: str) -> Any:
    """Parse a compose file or `compose config` output (ModelError when it is not YAML)."""
    from composecache import yaml  # not on import: a remembered project reads no YAML

    try:
        return yaml.load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"not valid YAML: {exc}") from exc


def model_from_config_output(text: str) -> ProjectModel:
    data = load_yaml(text)
    if not isinstance(data, dict):
        raise ModelError("`compose config` printed no project")
    return _model(data, approximate=False)


def model_from_file(path: Path) -> ProjectModel:
    """A single compose file read without compose (approximate: no merge, no interpolation)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror}") from exc
    data = load_yaml(text)
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a compose file (no top-level mapping)")
    model = _model(data, approximate=True)
    for service in model.services.values():
        if isinstance(service.build, dict) and "context" in service.build:
            context = str(service.build["context"])
            if "://" not in context and not context.startswith("/"):
                service.build["context"] = str((path.parent / context).resolve())
    return model


def _model(data: dict[str, Any], *, approximate: bool) -> ProjectModel:
    services_raw = data.get("services") or {}
    if not isinstance(services_raw, dict):
        raise ModelError("services: must be a mapping")
    services = {}
    for name, raw in services_raw.items():
        raw = raw if isinstance(raw, dict) else {}
        build = raw.get("build")
        if isinstance(build, str):
            build = {"context": build}
        elif build is not None and not isinstance(build, dict):
            build = None
        image = raw.get("image")
        service = ServiceModel(
            name=str(name),
            build=dict(build) if build is not None else None,
            image=str(image) if image is not None else None,
            extension=raw.get(EXTENSION),
        )
        if service.builds:  # checked here, once per `compose config`: a remembered project keeps the verdict
            service = service._replace(problems=extension_problems(service))
        services[service.name] = service
    name = data.get("name")
    return ProjectModel(name=str(name) if name else None, services=services, approximate=approximate)


class ServiceSettings(NamedTuple):
    enabled: bool = True
    scope: str | None = None
    mode: str = "max"


def extension_problems(service: ServiceModel) -> list[str]:
    """The schema errors of the service's x-composecache, as `services.<name>.x-composecache.<path>: ...`."""
    if service.extension is None:
        return []
    return schema.errors(service.extension, "x-composecache", prefix=f"services.{service.name}.{EXTENSION}")


def service_settings(service: ServiceModel) -> tuple[ServiceSettings, list[str]]:
    """The service's x-composecache settings and the schema errors (errors: the defaults, cache off)."""
    if service.extension is None:
        return ServiceSettings(), []
    problems = service.problems if service.problems is not None else extension_problems(service)
    if problems:
        return ServiceSettings(enabled=False), problems
    value = service.extension
    return ServiceSettings(
        enabled=bool(value.get("enabled", True)),
        scope=value.get("scope"),
        mode=str(value.get("mode", "max")),
    ), []


def file_defining(files: list[str], service: str, cwd: Path) -> str | None:
    """The last of the user's compose files that sets services.<service>.x-composecache (for messages)."""
    found = None
    for name in files:
        path = cwd / name
        try:
            data = load_yaml(path.read_text())
        except (OSError, ModelError):
            continue
        services = data.get("services") if isinstance(data, dict) else None
        if isinstance(services, dict) and isinstance(services.get(service), dict) and EXTENSION in services[service]:
            found = str(path)
    return found
