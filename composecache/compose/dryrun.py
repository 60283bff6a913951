"""`--dry-run`: what composecache would change, as a unified diff per service."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from composecache import yaml
from composecache.output import Output


def effective_build(build: Mapping[str, Any], addition: Mapping[str, Any] | None) -> dict[str, Any]:
    """The build section as compose merges it: list fields are appended."""
    merged = dict(build)
    for key, values in (addition or {}).items():
        merged[key] = [*list(build.get(key) or []), *values]
    return merged


def service_diff(service: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    old = yaml.dump({"build": dict(before)}).splitlines()
    new = yaml.dump({"build": dict(after)}).splitlines()
    return list(difflib.unified_diff(old, new, f"a/services/{service}", f"b/services/{service}", lineterm=""))


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
