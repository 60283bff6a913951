"""`--dry-run`: what composecache would change, as a unified diff per service."""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from composecache import yaml
from composecache.compose.project import ProjectModel
from composecache.output import Output


def effective_build(build: Mapping[str, Any], addition: Mapping[str, Any] | None) -> dict[str, Any]:
    """The build section as compose merges it: list fields are appended."""
    merged = dict(build)
    for key, values in (addition or {}).items():
        merged[key] = [*list(build.get(key) or []), *values]
    return merged


def effective(value: Any) -> Any:
    """The value compose uses: `compose config` output (and our override) write `$` as `$$`."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [effective(item) for item in value]
    if isinstance(value, dict):
        return {key: effective(item) for key, item in value.items()}
    return value


def service_diff(service: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    old = yaml.dump({"build": effective(dict(before))}).splitlines()
    new = yaml.dump({"build": effective(dict(after))}).splitlines()
    return list(difflib.unified_diff(old, new, f"a/services/{service}", f"b/services/{service}", lineterm=""))


def missing_sources(model: ProjectModel, services: Sequence[str], output: Output) -> list[str]:
    """A warning (and a preview note) for each build context or Dockerfile that is not there."""
    notes = []
    for name in services:
        build = model.services[name].build or {}
        context = effective(str(build.get("context", ".")))
        if "://" in context or context.startswith("git@") or (model.approximate and not os.path.isabs(context)):
            continue
        problem = None
        if not os.path.isdir(context):
            problem = f"build context {context} does not exist"
        elif "dockerfile_inline" not in build:
            dockerfile = effective(str(build.get("dockerfile") or "Dockerfile"))
            path = os.path.join(context, dockerfile)
            if not os.path.isfile(path):
                problem = f"Dockerfile {path} does not exist"
        if problem:
            output.warn(f"{name}: {problem}: the build will fail")
            notes.append(f"{name}: {problem}")
    return notes


def render_passthrough(argv: Sequence[str]) -> None:
    """The preview of a command that builds nothing: composecache passes it to compose unchanged."""
    print("# this command builds nothing: composecache runs it unchanged, without an override")
    print("# command:")
    print(shlex.join(argv))


def render(
    output: Output,
    diffs: Sequence[list[str]],
    argv: Sequence[str],
    env_changes: Mapping[str, str],
    notes: Sequence[str],
    override_document: Mapping[str, Any] | None = None,
) -> None:
    """Print the diffs, the exact command and the environment changes (stdout)."""
    import sys

    color = output.color and sys.stdout.isatty()
    for diff in diffs:
        for line in diff:
            print(_colored(line) if color else line)
    if not any(diffs):
        print("# no service builds: nothing to change")
    if override_document is not None:
        print("# override file (<override>, private, removed after the run):")
        for line in yaml.dump(dict(override_document)).splitlines():
            print(f"#   {line}")
    print("# command:")
    print(shlex.join(argv))
    if env_changes:
        print("# environment:")
        for key, value in env_changes.items():
            print(f"{key}={shlex.quote(value)}")
    for note in notes:
        print(f"# note: {note}")


def _colored(line: str) -> str:
    if line.startswith(("+++", "---")):
        return f"\x1b[1m{line}\x1b[0m"
    if line.startswith("+"):
        return f"\x1b[32m{line}\x1b[0m"
    if line.startswith("-"):
        return f"\x1b[31m{line}\x1b[0m"
    if line.startswith("@@"):
        return f"\x1b[36m{line}\x1b[0m"
    return line
